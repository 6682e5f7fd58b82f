"""Output projection + cross-entropy without materialising the logits.

At 32k tokens per batch and a 50k vocabulary the logits alone take 6.6 GB in fp32, and
the plain `F.cross_entropy(h @ W.T, y)` keeps two or three tensors of that size alive
(logits, log-softmax, their gradient). Here the tokens are cut into chunks; for each
chunk we compute its logits, their log-sum-exp and loss, and (when gradients are
wanted) turn the chunk's logits in place into d loss / d logits and fold them straight
into the gradients of the hidden states, the output weight and the bias. Peak memory
is O(chunk x V) + O(V x D) instead of O(N x V).

Implementations, chosen by `linear_cross_entropy` (the dispatcher):

- `reference`: `F.cross_entropy` on the full logits (the definition the others match).
- `chunked`: pure PyTorch, any device. Gradients are computed during the forward pass
  (three matmuls in all, as for the reference) for mean/sum reductions; with
  `reduction="none"` the backward recomputes each chunk (four matmuls).
- `triton`: the same chunk loop with the softmax, loss and gradient of each chunk
  fused into one Triton kernel that works in place (CUDA only,
  `linear_cross_entropy_triton.py`).

Tied weights need nothing special: `weight` may be the embedding's parameter, and
autograd adds this op's gradient to the embedding's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlm.constants import IGNORE_INDEX
from seqlm.errors import ConfigError
from seqlm.kernels.dispatch import choose_impl

IMPLEMENTATIONS: tuple[str, ...] = ("reference", "chunked", "triton")
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")

# A function that turns one chunk's fp32 logits (C, V) into d loss / d logits in place,
# scaled per row by `scale` (C,), and returns the per-token loss (C,) (0 where ignored).
ChunkLossAndGrad = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """How the loss over the output layer is computed.

    `impl`: "auto", "reference", "chunked" or "triton". Auto uses the reference for
    vocabularies smaller than `vocab_threshold` (where the logits are small and one big
    matmul is fastest) and a chunked path from there on, and also for a small
    vocabulary once the call's logits would reach `logit_limit_elements` (a long-context
    batch: 16,384 tokens x a 4k vocabulary is 272 MB of fp32 logits, and the reference
    keeps them and their gradient).
    `chunk_tokens`: tokens per chunk; None picks `chunk_logit_elements // V` so that a
    chunk's logits take about `4 * chunk_logit_elements` bytes (16 MiB by default:
    larger chunks are no faster on CPU and a step's peak memory includes one).
    """

    impl: str = "auto"
    vocab_threshold: int = 8192
    chunk_tokens: int | None = None
    chunk_logit_elements: int = 1 << 22
    logit_limit_elements: int = 1 << 25

    def __post_init__(self) -> None:
        if self.impl not in ("auto", *IMPLEMENTATIONS):
            names = ", ".join(("auto", *IMPLEMENTATIONS))
            raise ConfigError(
                f"linear_cross_entropy: impl must be one of {names}, not {self.impl!r}"
            )
        if self.vocab_threshold < 0:
            raise ConfigError("linear_cross_entropy: vocab_threshold must be >= 0")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ConfigError("linear_cross_entropy: chunk_tokens must be >= 1")
        if self.chunk_logit_elements < 1:
            raise ConfigError("linear_cross_entropy: chunk_logit_elements must be >= 1")
        if self.logit_limit_elements < 1:
            raise ConfigError("linear_cross_entropy: logit_limit_elements must be >= 1")

    def tokens_per_chunk(self, vocab_size: int) -> int:
        if self.chunk_tokens is not None:
            return self.chunk_tokens
        return max(1, self.chunk_logit_elements // max(1, vocab_size))


def _check_arguments(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None,
    token_weights: Tensor | None,
    reduction: str,
) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"linear_cross_entropy: reduction must be one of {REDUCTIONS}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ConfigError(
            f"linear_cross_entropy: hidden {tuple(hidden.shape)} and weight "
            f"{tuple(weight.shape)} do not fit (weight must be (vocab, width))"
        )
    if targets.shape != hidden.shape[:-1]:
        raise ConfigError(
            f"linear_cross_entropy: targets {tuple(targets.shape)} must have the shape of "
            f"hidden without its last dimension {tuple(hidden.shape[:-1])}"
        )
    if targets.dtype not in (torch.int64, torch.int32):
        raise ConfigError(f"linear_cross_entropy: targets must be integer ids, not {targets.dtype}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ConfigError(f"linear_cross_entropy: bias must have shape ({weight.shape[0]},)")
    if token_weights is not None and token_weights.shape != targets.shape:
        raise ConfigError("linear_cross_entropy: token_weights must have the shape of targets")


def _check_target_range(targets: Tensor, vocab_size: int, ignore_index: int) -> None:
    """Refuse ids outside the vocabulary (on CPU; on CUDA the check would cost a sync)."""
    if targets.device.type == "cuda" or targets.numel() == 0:
        return
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab_size))
    if bool(bad.any()):
        position = int(bad.flatten().nonzero()[0, 0])
        raise ConfigError(
            f"linear_cross_entropy: target id {int(targets.flatten()[position])} at flat "
            f"position {position} is outside the vocabulary of {vocab_size} tokens"
        )


def linear_cross_entropy_reference(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    token_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
) -> Tensor:
    """`F.cross_entropy(hidden @ weight.T + bias, targets)` with the logits in fp32.

    With `token_weights`, each token's loss is multiplied by its weight and the mean
    divides by the total weight of the counted (not ignored) tokens.
    """
    _check_arguments(hidden, weight, targets, bias, token_weights, reduction)
    # fp32 at least (bf16 logits lose the loss), but fp64 stays fp64
    accumulate = torch.promote_types(hidden.dtype, torch.float32)
    logits = F.linear(hidden, weight, bias).to(accumulate).flatten(0, -2)
    flat_targets = targets.flatten().long()
    if token_weights is None:
        losses = F.cross_entropy(logits, flat_targets, ignore_index=ignore_index, reduction="none")
        if reduction == "mean":
            return losses.sum() / (flat_targets != ignore_index).sum()
        return losses.sum() if reduction == "sum" else losses.view(targets.shape)
    valid_weight = token_weights.flatten().to(accumulate) * (flat_targets != ignore_index)
    safe_targets = flat_targets.masked_fill(flat_targets == ignore_index, 0)
    losses = F.cross_entropy(logits, safe_targets, reduction="none") * valid_weight
    if reduction == "mean":
        return losses.sum() / valid_weight.sum()
    return losses.sum() if reduction == "sum" else losses.view(targets.shape)


def chunk_loss_and_grad_torch(
    logits: Tensor, safe_targets: Tensor, valid: Tensor, scale: Tensor | None
) -> Tensor:
    """Per-token loss of one chunk; with `scale`, `logits` becomes its gradient in place.

    `logits` is fp32 (C, V), owned by the caller and overwritten either way; `scale` (C,) is d total / d loss_i
    (0 for ignored tokens), so the gradient rows are (softmax - onehot) * scale.
    """
    target_logit = logits.gather(1, safe_targets[:, None]).squeeze(1)
    row_max = logits.amax(dim=-1, keepdim=True)
    # Work in place (logits becomes exp(x - max)): no temporary of the chunk's size,
    # and two fewer sweeps over it than logsumexp followed by exp(x - lse).
    logits.sub_(row_max).exp_()
    row_sum = logits.sum(dim=-1)
    losses = (row_max.squeeze(1) + row_sum.log() - target_logit) * valid
    if scale is not None:
        logits.mul_((scale / row_sum)[:, None])
        logits.scatter_add_(1, safe_targets[:, None], -scale[:, None])
    return losses


def _chunk_pass(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    safe_targets: Tensor,
    valid: Tensor,
    scale: Tensor | None,
    chunk_tokens: int,
    chunk_kernel: ChunkLossAndGrad,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """One pass over the chunks: per-token losses and, when `scale` is given, gradients.

    `need` says which of (hidden, weight, bias) gradients to accumulate. The weight and
    bias gradients are accumulated in fp32 whatever the inputs' dtype.
    """
    n_tokens = hidden.shape[0]
    losses = torch.empty(n_tokens, dtype=torch.float32, device=hidden.device)
    want_grads = scale is not None
    grad_hidden = torch.empty_like(hidden) if want_grads and need[0] else None
    grad_weight = (
        torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        if want_grads and need[1]
        else None
    )
    grad_bias = (
        torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
        if want_grads and need[2] and bias is not None
        else None
    )
    for start in range(0, n_tokens, chunk_tokens):
        stop = min(start + chunk_tokens, n_tokens)
        hidden_chunk = hidden[start:stop]
        logits = F.linear(hidden_chunk, weight, bias).float()
        chunk_scale = scale[start:stop] if scale is not None else None
        losses[start:stop] = chunk_kernel(
            logits, safe_targets[start:stop], valid[start:stop], chunk_scale
        )
        if not want_grads:
            continue
        grad_logits = logits.to(hidden.dtype)
        if grad_hidden is not None:
            torch.matmul(grad_logits, weight, out=grad_hidden[start:stop])
        if grad_weight is not None:
            if hidden.dtype == torch.float32:
                grad_weight.addmm_(grad_logits.T, hidden_chunk)
            else:
                grad_weight += (grad_logits.T @ hidden_chunk).float()
        if grad_bias is not None:
            grad_bias += logits.sum(0)
    return losses, grad_hidden, grad_weight, grad_bias


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Autograd for the chunked loss; hidden (N, D), weight (V, D), targets (N,)."""

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        token_weights: Tensor | None,
        ignore_index: int,
        reduction: str,
        chunk_tokens: int,
        chunk_kernel: ChunkLossAndGrad,
        want_grads: bool,
    ) -> Tensor:
        device_type = hidden.device.type
        # Autocast would recast inside the loop; cast once so every matmul runs in
        # hidden's dtype and gradients come back in the parameters' dtypes.
        with torch.autocast(device_type=device_type, enabled=False):
            compute_weight = weight.to(hidden.dtype)
            compute_bias = bias.to(hidden.dtype) if bias is not None else None
            valid = targets != ignore_index
            safe_targets = targets.masked_fill(~valid, 0).long()
            valid_weight = valid.float()
            if token_weights is not None:
                valid_weight = valid_weight * token_weights.float()
            total_weight = valid_weight.sum()
            if reduction == "mean":
                # Zero where nothing counts, so an all-ignored batch has zero gradients
                # (its loss is 0/0 = nan, as F.cross_entropy's).
                scale = torch.where(valid_weight != 0, valid_weight / total_weight, 0.0)
            else:
                scale = valid_weight
            need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
            grads_now = want_grads and reduction != "none"
            losses, grad_hidden, grad_weight, grad_bias = _chunk_pass(
                hidden,
                compute_weight,
                compute_bias,
                safe_targets,
                valid,
                scale if grads_now else None,
                chunk_tokens,
                chunk_kernel,
                need,
            )
        losses = losses * valid_weight
        ctx.reduction = reduction
        ctx.grads_now = grads_now
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        if grads_now:
            ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        elif want_grads:
            ctx.chunk_tokens = chunk_tokens
            ctx.chunk_kernel = chunk_kernel
            ctx.need = need
            ctx.save_for_backward(hidden, compute_weight, compute_bias, safe_targets, valid_weight)
        if reduction == "mean":
            return losses.sum() / total_weight
        if reduction == "sum":
            return losses.sum()
        return losses

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        if ctx.grads_now:
            grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        else:
            # reduction="none": d total / d loss_i = grad_output_i * weight_i.
            hidden, weight, bias, safe_targets, valid_weight = ctx.saved_tensors
            scale = grad_output.float() * valid_weight
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                _, grad_hidden, grad_weight, grad_bias = _chunk_pass(
                    hidden,
                    weight,
                    bias,
                    safe_targets,
                    valid_weight != 0,
                    scale,
                    ctx.chunk_tokens,
                    ctx.chunk_kernel,
                    ctx.need,
                )
            grad_output = None
        grads = []
        for grad, dtype in zip(
            (grad_hidden, grad_weight, grad_bias),
            (hidden_dtype, weight_dtype, bias_dtype),
            strict=True,
        ):
            if grad is not None and grad_output is not None:
                grad = grad * grad_output
            grads.append(grad.to(dtype) if grad is not None else None)
        return (*grads, None, None, None, None, None, None, None)


def linear_cross_entropy_chunked(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    token_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    chunk_tokens: int = 256,
    chunk_kernel: ChunkLossAndGrad = chunk_loss_and_grad_torch,
) -> Tensor:
    """The loss of `linear_cross_entropy_reference`, computed `chunk_tokens` at a time."""
    _check_arguments(hidden, weight, targets, bias, token_weights, reduction)
    if chunk_tokens < 1:
        raise ConfigError("linear_cross_entropy: chunk_tokens must be >= 1")
    _check_target_range(targets, weight.shape[0], ignore_index)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    flat_weights = token_weights.reshape(-1) if token_weights is not None else None
    # Inside Function.forward grad mode is off and needs_input_grad ignores no_grad(),
    # so decide here whether this call will ever be differentiated.
    want_grads = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    loss = _ChunkedLinearCrossEntropy.apply(
        flat_hidden,
        weight,
        bias,
        flat_targets,
        flat_weights,
        ignore_index,
        reduction,
        chunk_tokens,
        chunk_kernel,
        want_grads,
    )
    return loss.view(targets.shape) if reduction == "none" else loss


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    token_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    options: LinearCrossEntropyOptions | None = None,
) -> Tensor:
    """Cross-entropy of `hidden @ weight.T (+ bias)` against `targets`: the dispatcher.

    hidden (..., D), weight (V, D), targets (...) with `ignore_index` for tokens that do
    not count. `options.impl="auto"` picks the reference below `vocab_threshold` while
    the logits stay under `logit_limit_elements`, else the chunked path (with the Triton
    chunk kernel on CUDA where triton is installed: verified on an H200, session 16).
    """
    options = options or LinearCrossEntropyOptions()
    tokens = hidden.numel() // max(1, hidden.shape[-1])
    impl = choose_linear_cross_entropy_impl(weight.shape[0], hidden.device, options, tokens)
    if impl == "reference":
        return linear_cross_entropy_reference(
            hidden,
            weight,
            targets,
            bias=bias,
            token_weights=token_weights,
            ignore_index=ignore_index,
            reduction=reduction,
        )
    chunk_kernel = chunk_loss_and_grad_torch
    if impl == "triton":
        from seqlm.kernels.linear_cross_entropy_triton import chunk_loss_and_grad_triton

        chunk_kernel = chunk_loss_and_grad_triton
    return linear_cross_entropy_chunked(
        hidden,
        weight,
        targets,
        bias=bias,
        token_weights=token_weights,
        ignore_index=ignore_index,
        reduction=reduction,
        chunk_tokens=options.tokens_per_chunk(weight.shape[0]),
        chunk_kernel=chunk_kernel,
    )


def choose_linear_cross_entropy_impl(
    vocab_size: int,
    device: torch.device,
    options: LinearCrossEntropyOptions,
    tokens: int | None = None,
) -> str:
    """The implementation `linear_cross_entropy` will use for this vocabulary and device
    (and, when given, this many tokens: many tokens make even a small vocabulary's
    logits large)."""
    small_logits = tokens is None or tokens * vocab_size < options.logit_limit_elements
    if options.impl == "auto" and vocab_size < options.vocab_threshold and small_logits:
        return "reference"
    return choose_impl(
        "linear_cross_entropy", options.impl, IMPLEMENTATIONS, device, ("triton", "chunked")
    )
