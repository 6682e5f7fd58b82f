"""The GPT: token embedding, a plain loop over self-contained blocks, final norm, LM head.

With the defaults (pre-LN, learned positions, tied embeddings, no document mask, no
span) the forward and backward do the same work as a hand-written nanoGPT loop: one
fused SDPA call per layer with `is_causal=True`, no mask tensors, no extra copies.

The forward takes tokens, targets, masks (`doc_ids`, `attention_span`, `loss_mask`) and
an optional `KVCache` (incremental decoding: generation and scoring use this one
forward). Other parts build on it from outside:
- `hidden_states()` and `output_weight` let a fused linear + cross-entropy compute the
  loss without logits; `loss_fn` (from `GPTConfig.loss_impl`) is that swappable loss.
- `attention_span=` at call time, or `set_attention_span()`, for span experiments.
- research hooks attach as module hooks, owned where they are used: attention capture
  and head gates in `seqlm.analysis`, layer dropping and stacking in
  `seqlm.training.efficient`. Each block's attention output projection (`attn.proj`)
  takes the heads side by side, each sublayer's output is its residual branch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlm.errors import ConfigError
from seqlm.kernels.lazy_mask import LazyAttentionMask
from seqlm.model.attention import CausalSelfAttention, attention_mask
from seqlm.model.config import GPTConfig
from seqlm.model.kv_cache import KVCache, cached_attention_mask
from seqlm.model.loss import cross_entropy_from_logits, loss_impl
from seqlm.model.norms import SublayerNorms, embedding_norm, final_norm
from seqlm.model.positions import LearnedPositions, RotaryPositions, alibi_mask, alibi_slopes
from seqlm.model.token_parts import TokenPartMap, TokenParts

# What `attention_span=` accepts at call time: "config" keeps the model's own spans,
# None turns spans off, an int sets one span for every layer, a list sets each layer.
SpanSetting = int | None | Sequence[int | None] | Literal["config"]


@dataclass
class ModelOutput:
    logits: Tensor | None
    loss: Tensor | None


def _is_float(mask: Tensor | None) -> bool:
    """Whether `mask` is already a float (ALiBi) mask; reads only the dtype, so a lazy
    boolean mask stays lazy."""
    return mask is not None and mask.dtype.is_floating_point


class MLP(nn.Module):
    def __init__(self, n_embd: int, ratio: int, *, bias: bool, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(n_embd, ratio * n_embd, bias=bias)
        self.down = nn.Linear(ratio * n_embd, n_embd, bias=bias)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        y = self.down(F.gelu(self.up(x)))
        if self.dropout and self.training:
            y = F.dropout(y, p=self.dropout, training=True)
        return y


class Block(nn.Module):
    """One transformer block; its norm placement is fixed at construction."""

    def __init__(self, config: GPTConfig, layer_index: int, placement: str) -> None:
        super().__init__()
        self.placement = placement
        norm_args = {"eps": config.norm_eps, "bias": config.bias}
        self.attn_norms = SublayerNorms(placement, config.norm, config.n_embd, **norm_args)
        self.attn = CausalSelfAttention(
            config.n_embd,
            config.n_head,
            bias=config.bias,
            dropout=config.dropout,
            layer_index=layer_index,
        )
        self.mlp_norms = SublayerNorms(placement, config.norm, config.n_embd, **norm_args)
        self.mlp = MLP(config.n_embd, config.mlp_ratio, bias=config.bias, dropout=config.dropout)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        x = self.attn_norms.residual_step(x, lambda h: self.attn(h, rotary, mask, cache))
        return self.mlp_norms.residual_step(x, self.mlp)


def _bare_tied_head_refused(module: nn.Module, args: tuple) -> None:
    raise ConfigError(
        "this model shares token parts (model.token_parts) with a tied head: lm_head holds "
        "only the bare token table; call GPT.head_logits(hidden) for the logits"
    )


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        placements = config.placement_per_layer()
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        # Only built with the option, so a plain model's parameters are today's.
        self.token_parts = (
            TokenParts(config.vocab_size, config.code_parts, config.value_parts, config.n_embd)
            if config.token_parts
            else None
        )
        self.position_embedding = (
            LearnedPositions(config.block_size, config.n_embd)
            if config.positions == "learned"
            else None
        )
        self.rotary = (
            RotaryPositions(config.head_dim, config.block_size, config.rope_base)
            if config.positions == "rotary"
            else None
        )
        # ALiBi's slopes: fixed, not weights (non-persistent: checkpoints do not hold them).
        self.alibi_slopes: Tensor | None
        if config.positions == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(config.n_head), persistent=False)
        else:
            self.alibi_slopes = None
        self.embedding_norm = embedding_norm(
            placements, config.norm, config.n_embd, eps=config.norm_eps, bias=config.bias
        )
        self.blocks = nn.ModuleList(
            Block(config, i, placement) for i, placement in enumerate(placements)
        )
        self.final_norm = final_norm(
            placements, config.norm, config.n_embd, eps=config.norm_eps, bias=config.bias
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
            if config.token_parts:
                # Tied with parts, lm_head holds the bare token table: its logits would
                # miss the part-shared rows. Calling it is refused; use head_logits.
                self.lm_head.register_forward_pre_hook(_bare_tied_head_refused)
        self.loss_fn = loss_impl(config.loss_impl)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, std) weights, zero biases, residual outputs scaled by depth."""
        std = self.config.init_std
        # The part tables are left out (zeroed below), so the other weights draw the
        # same numbers as a plain model of the same seed.
        parts = set() if self.token_parts is None else set(self.token_parts.modules())
        for module in self.modules():
            if module in parts:
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        # Each block adds two branches to the residual stream; scaling their output
        # projections keeps its variance independent of depth.
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)
        if self.token_parts is not None:
            self.token_parts.reset_parameters()

    def set_token_parts(self, parts: TokenPartMap) -> None:
        """Install the token -> part map of the corpus's vocabulary (`token_parts` only)."""
        if self.token_parts is None:
            raise ConfigError("set_token_parts needs a model built with model.token_parts")
        self.token_parts.set_map(parts)

    def embedding_matrix(self) -> Tensor:
        """The (V, C) input embedding: the token table, plus each token's parts."""
        own = self.token_embedding.weight
        return own if self.token_parts is None else self.token_parts.effective(own)

    def _output_weight(self, embedding: Tensor | None) -> Tensor:
        if self.config.tie_embeddings and self.token_parts is not None:
            return self.embedding_matrix() if embedding is None else embedding
        return self.lm_head.weight

    def head_logits(self, hidden: Tensor) -> Tensor:
        """Logits from final hidden states; every caller outside uses this, not lm_head,
        so part-shared output rows are applied too."""
        return F.linear(hidden, self.output_weight)

    @property
    def output_weight(self) -> Tensor:
        """The LM head weight (V, C); the (effective) token embedding when tied."""
        return self._output_weight(None)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied matrix counts once).

        `exclude_embeddings` leaves out the token and learned-position tables; an untied
        LM head is a separate matrix and stays counted.
        """
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.token_embedding.weight.numel()
            if self.token_parts is not None:
                total -= sum(p.numel() for p in self.token_parts.parameters())
            if self.position_embedding is not None:
                total -= self.position_embedding.embedding.weight.numel()
        return total

    # ----- attention spans -----

    @property
    def attention_spans(self) -> list[int | None]:
        """The span each layer uses when a call does not override it."""
        return self.config.spans_per_layer()

    def set_attention_span(self, span: int | None | Sequence[int | None]) -> None:
        """Set the model's spans (one for all layers, or a list per layer); config follows."""
        if span is None or isinstance(span, int):
            config = dataclasses.replace(self.config, attention_span=span, layer_spans=None)
        else:
            config = dataclasses.replace(self.config, attention_span=None, layer_spans=list(span))
        self.config = config

    def _resolve_spans(self, setting: SpanSetting) -> list[int | None]:
        n_layer = len(self.blocks)
        if isinstance(setting, str):
            if setting != "config":
                raise ConfigError("attention_span must be an int, None, a list or 'config'")
            return self.config.spans_per_layer()
        if setting is None:
            return [None] * n_layer
        if isinstance(setting, Integral):
            spans = [setting] * n_layer
        elif isinstance(setting, Sequence):
            spans = list(setting)
        else:
            raise ConfigError(
                f"attention_span must be an int, None, a list or 'config', not {setting!r}"
            )
        if len(spans) != n_layer:
            raise ConfigError(f"got {len(spans)} attention spans for {n_layer} layers")
        for span in spans:
            if span is not None and (
                isinstance(span, bool) or not isinstance(span, Integral) or span < 1
            ):
                raise ConfigError(f"an attention span must be a positive integer, got {span!r}")
        return [None if span is None else int(span) for span in spans]

    def _layer_masks(
        self,
        seq_len: int,
        doc_ids: Tensor | None,
        spans: list[int | None],
        device: torch.device,
        cache: KVCache | None,
    ) -> list[Tensor | None]:
        """One mask per layer (None: no mask tensor), built once per distinct span.

        With ALiBi every mask is the float mask of `alibi_mask`: the boolean rule
        (causal, span, documents) as -inf, the recency bias elsewhere.
        """
        built: dict[int | None, Tensor | None] = {}
        masks = []
        start = 0 if cache is None else cache.length
        for span in spans:
            if cache is not None:  # what a span hides depends on the cached length too
                key = span
                if key not in built:
                    built[key] = cached_attention_mask(
                        cache.length, seq_len, span=span, doc_ids=doc_ids, device=device
                    )
            else:
                key = None if span is None or span >= seq_len else span
                if key not in built:
                    built[key] = attention_mask(seq_len, doc_ids=doc_ids, span=key, device=device)
            if self.alibi_slopes is not None and not _is_float(built[key]):
                allowed = built[key]
                if isinstance(allowed, LazyAttentionMask):
                    allowed = allowed.dense()
                built[key] = alibi_mask(allowed, self.alibi_slopes, start, seq_len)
            masks.append(built[key])
        return masks

    # ----- forward -----

    def hidden_states(
        self,
        idx: Tensor,
        *,
        cache: KVCache | None = None,
        doc_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        attention_span: SpanSetting = "config",
        embedding: Tensor | None = None,
    ) -> Tensor:
        """Final normed hidden states (B, T, C), the input of the LM head.

        With a `cache`, `idx` are the tokens after the `cache.length` cached ones, at
        positions cache.length.. (unless `position_ids` says otherwise); their keys and
        values join the cache. `doc_ids` then give the new tokens' documents.
        `embedding`: the `embedding_matrix()` when the caller has it already.
        """
        seq_len = idx.shape[1]
        if cache is not None:
            self._check_cached_call(idx, doc_ids, cache)
            if position_ids is None:
                position_ids = cache.positions(seq_len, idx.device)
            doc_ids = cache.store_doc_ids(doc_ids)
        elif seq_len > self.config.block_size:
            raise ConfigError(
                f"sequence length {seq_len} exceeds the model's block_size {self.config.block_size}"
            )
        if self.token_parts is None:
            x = self.token_embedding(idx)
        else:
            weight = self.embedding_matrix() if embedding is None else embedding
            x = F.embedding(idx, weight)
        if self.position_embedding is not None:
            x = x + self.position_embedding(seq_len, position_ids, idx.device)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        rotary = self.rotary(seq_len, position_ids) if self.rotary is not None else None
        if self.config.dropout and self.training:
            x = F.dropout(x, p=self.config.dropout, training=True)
        spans = self._resolve_spans(attention_span)
        masks = self._layer_masks(seq_len, doc_ids, spans, idx.device, cache)
        for block, mask in zip(self.blocks, masks, strict=True):
            x = block(x, rotary, mask, cache)
        if cache is not None:
            cache.advance(seq_len)
        return self.final_norm(x)

    def _check_cached_call(self, idx: Tensor, doc_ids: Tensor | None, cache: KVCache) -> None:
        if self.training:
            raise ConfigError("call model.eval() before decoding with a KV cache")
        if len(cache.keys) != len(self.blocks):
            raise ConfigError(
                f"the cache has {len(cache.keys)} layers, the model {len(self.blocks)}"
            )
        cache.check_input(idx, doc_ids)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        doc_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        loss_mask: Tensor | None = None,
        return_logits: bool = True,
        attention_span: SpanSetting = "config",
    ) -> ModelOutput:
        """Logits (B, T, V) and/or the loss on `targets` (`IGNORE_INDEX` = no loss there).

        When logits are returned the loss is computed from them (they exist anyway);
        with `return_logits=False` the loss comes from `self.loss_fn` on the hidden
        states, so a memory-lean loss never materialises them. With a `cache` (eval mode
        only) the logits are those of the new tokens `idx` given what is cached.
        """
        # The part-shared matrix is built once a forward, for the input and the output.
        embedding = None if self.token_parts is None else self.embedding_matrix()
        hidden = self.hidden_states(
            idx,
            cache=cache,
            doc_ids=doc_ids,
            position_ids=position_ids,
            attention_span=attention_span,
            embedding=embedding,
        )
        output_weight = self._output_weight(embedding)
        if not return_logits:
            loss = None
            if targets is not None:
                loss = self.loss_fn(hidden, output_weight, targets, loss_mask)
            return ModelOutput(logits=None, loss=loss)
        logits = F.linear(hidden, output_weight)
        loss = None if targets is None else cross_entropy_from_logits(logits, targets, loss_mask)
        return ModelOutput(logits=logits, loss=loss)
