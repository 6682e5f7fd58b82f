"""Parameter and FLOP counts of a GPTConfig, from the config alone (no model built).

Parameters, with C = n_embd, V = vocab_size, L = n_layer, r = mlp_ratio and b = 1
when biases are on (else 0); a LayerNorm with bias has 2C parameters, an RMSNorm or
a bias-free LayerNorm C:

    per block   attention  3C^2 + 3bC  +  C^2 + bC
                MLP        rC^2 + brC  +  rC^2 + bC
                norms      2 (pre, post) or 4 (peri) norms
    model       V C (tokens) + block_size C (learned positions) + L blocks
                + embedding norm (only when the first block is Peri-LN)
                + final norm (absent when the last block is Post-LN) + V C (untied head)

FLOPs per token for one training step (forward + backward), as in the PaLM paper's
appendix B and nanoGPT's MFU estimate:

    6 N + 12 L C T

N counts the parameters that take part in matrix multiplies: all of them except the
learned-position table and, when the head is untied, the input token table (both are
lookups). 6N is 2 FLOPs per multiply-add, times 3 for forward + backward. 12 L C T is
the attention score and weighted-sum products (QK^T and AV, 2 x 2 T C per token per
layer, times 3) at sequence length T; like PaLM it counts the full T x T product,
not the causal half, and it ignores spans and document masks (SDPA with a mask still
computes every product on the common kernels).
"""

from __future__ import annotations

from seqlm.model.config import GPTConfig


def _norm_parameters(config: GPTConfig) -> int:
    has_bias = config.norm == "layernorm" and config.bias
    return config.n_embd * (2 if has_bias else 1)


def parameter_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters per component (token_embedding, position_embedding, embedding_norm,
    blocks, final_norm, lm_head).

    `lm_head` is 0 when tied (it is the token embedding); blocks is all L blocks.
    """
    width, bias = config.n_embd, int(config.bias)
    hidden = config.mlp_ratio * width
    attention = (3 * width * width + 3 * bias * width) + (width * width + bias * width)
    mlp = (width * hidden + bias * hidden) + (hidden * width + bias * width)
    norms_per_placement = {"pre": 2, "post": 2, "peri": 4}
    placements = config.placement_per_layer()
    blocks = sum(
        attention + mlp + norms_per_placement[p] * _norm_parameters(config) for p in placements
    )
    return {
        # Part tables (token_parts) are embedding rows too.
        "token_embedding": (
            config.vocab_size + (config.code_parts + config.value_parts) * config.token_parts
        )
        * width,
        "position_embedding": config.block_size * width if config.positions == "learned" else 0,
        "embedding_norm": _norm_parameters(config) if placements[0] == "peri" else 0,
        "blocks": blocks,
        "final_norm": 0 if placements[-1] == "post" else _norm_parameters(config),
        "lm_head": 0 if config.tie_embeddings else config.vocab_size * width,
    }


def parameter_count(config: GPTConfig, exclude_embeddings: bool = False) -> int:
    """Total distinct parameters; the same number `GPT(config).num_parameters()` gives."""
    parts = parameter_breakdown(config)
    if exclude_embeddings:
        parts["token_embedding"] = 0
        parts["position_embedding"] = 0
    return sum(parts.values())


def flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token (forward + backward): 6 N + 12 L C T (see module doc)."""
    seq_len = config.block_size if seq_len is None else seq_len
    parts = parameter_breakdown(config)
    matmul_parameters = sum(parts.values()) - parts["position_embedding"]
    if not config.tie_embeddings:
        matmul_parameters -= parts["token_embedding"]
    return 6 * matmul_parameters + 12 * config.n_layer * config.n_embd * seq_len


def forward_flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Forward-only FLOPs per token (evaluation, generation): a third of the above."""
    return flops_per_token(config, seq_len) // 3
