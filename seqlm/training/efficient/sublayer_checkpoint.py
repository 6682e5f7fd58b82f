"""Sublayer checkpointing: each residual sublayer keeps only its input for the backward.

With block-wise attention (no T x T tensor) a long-context step's memory is what
autograd keeps per block: the norms' inputs and outputs, q/k/v and the attention
output, the MLP's (N, 4C) hidden. `checkpointed_sublayers(model)` replaces that, per
block, by the two residual-stream tensors entering the sublayers (2 x N x C), and keeps
the recomputation in the backward small and cheap:

- **attention sublayer** (norm, q/k/v projection, rotary, attention, output
  projection): selective checkpointing (`torch.utils.checkpoint` with a policy)
  keeps the fused attention kernel's outputs (its output and log-sum-exp, what its
  backward needs besides q, k, v) and recomputes the rest, so the backward pays the
  norm, two projections and the rotation again (linear in T) but not the attention.
- **MLP sublayer** (norm, up, GELU, down, all per token): `token_chunked_checkpoint`
  runs it in chunks of tokens without recording a graph, and the backward recomputes
  and differentiates one chunk at a time, so the (N, 4C) hidden never exists whole
  (one chunk of `chunk_elements` at a time). Where that would not be the same
  computation (dropout draws, forward hooks that may count their calls) it falls
  back to plain checkpointing of the sublayer.

Exact: the same ops on the same values; parameter gradients of the chunked MLP are
sums over chunks (float rounding). tests/training/test_efficient_sublayer_checkpoint.py.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from seqlm.kernels.model_loss import kernel_loss
from seqlm.kernels.projected_attention import (
    fix_mmap_threshold,
    heap_allocations,
    release_free_memory,
)
from seqlm.model.loss import loss_impl

# Elements of the MLP's hidden (N, 4C) per chunk: just under 1 MiB in float32, under
# the fixed mmap threshold (`map_large_allocations`), so each chunk's hidden tensors
# come from glibc's heap and are reused, not mapped and faulted in afresh per chunk.
MLP_CHUNK_ELEMENTS = (1 << 18) - (1 << 10)
# Logits per chunk of the model's chunked loss while sublayers are checkpointed (the
# kernel default is 2^22): the loss runs when every saved activation is alive.
LOSS_CHUNK_ELEMENTS = 1 << 20

# Fused attention kernels whose outputs a checkpointed attention sublayer keeps.
_ATTENTION_KERNELS = tuple(
    getattr(torch.ops.aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    if hasattr(torch.ops.aten, name)
)


def _keep_attention_outputs(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in _ATTENTION_KERNELS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def attention_saving_contexts():
    """`context_fn` for `checkpoint`: keep attention kernels' outputs, recompute the rest."""
    return create_selective_checkpoint_contexts(_keep_attention_outputs)


def _chunk_backward(ctx, flats, flat_grad, trainable, grad_inputs, totals) -> None:
    """`_TokenChunked`'s backward, chunk by chunk: recompute, differentiate, write the
    inputs' gradients into `grad_inputs` and add the parameters' into `totals`."""
    device_type, enabled = ctx.autocast
    start = 0
    for chunk_grad in flat_grad.split(ctx.chunk_tokens):
        stop = start + len(chunk_grad)
        chunks = [f[start:stop].requires_grad_() for f in flats]
        with (
            torch.enable_grad(),
            torch.autocast(device_type, dtype=ctx.autocast_dtype, enabled=enabled),
        ):
            y = ctx.fn(*chunks)
        grads = torch.autograd.grad(y, [*chunks, *trainable], chunk_grad, allow_unused=True)
        for total, grad in zip(grad_inputs, grads[: ctx.n_inputs], strict=True):
            if total is not None and grad is not None:
                total[start:stop] = grad
            elif total is not None:
                total[start:stop] = 0
        for i, grad in enumerate(grads[ctx.n_inputs :]):
            if grad is not None:
                totals[i] = grad if totals[i] is None else totals[i].add_(grad)
        start = stop


class _TokenChunked(torch.autograd.Function):
    """`fn(*inputs)` over the inputs' rows in chunks; the backward recomputes per chunk.

    The inputs share their leading dimensions (rows of tokens); `fn` maps each row of
    them to one row of the output."""

    @staticmethod
    def forward(ctx, fn, chunk_tokens: int, n_inputs: int, *tensors: Tensor) -> Tensor:
        inputs, params = tensors[:n_inputs], tensors[n_inputs:]
        ctx.fn, ctx.chunk_tokens, ctx.n_inputs = fn, chunk_tokens, n_inputs
        x = inputs[0]
        ctx.autocast = (x.device.type, torch.is_autocast_enabled(x.device.type))
        ctx.autocast_dtype = torch.get_autocast_dtype(x.device.type)
        ctx.save_for_backward(*inputs, *params)
        flats = [t.reshape(-1, t.shape[-1]) for t in inputs]
        out = None
        with heap_allocations():  # the chunks' tensors reused from the heap
            for start in range(0, flats[0].shape[0], chunk_tokens):  # in place: no cat
                piece = fn(*(f[start : start + chunk_tokens] for f in flats))
                if out is None:
                    out = piece.new_empty(flats[0].shape[0], piece.shape[-1])
                out[start : start + chunk_tokens] = piece
                del piece
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        release_free_memory()  # the step's peak is in the backward: start from a trimmed heap
        saved = ctx.saved_tensors
        inputs, params = saved[: ctx.n_inputs], saved[ctx.n_inputs :]
        needs = ctx.needs_input_grad[3:]
        need_inputs, need_params = needs[: ctx.n_inputs], needs[ctx.n_inputs :]
        trainable = [p for p, need in zip(params, need_params, strict=True) if need]
        flats = [t.detach().reshape(-1, t.shape[-1]) for t in inputs]
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_inputs = [
            torch.empty_like(f) if need else None
            for f, need in zip(flats, need_inputs, strict=True)
        ]
        totals: list[Tensor | None] = [None] * len(trainable)
        with heap_allocations(threshold=None):  # the peak: large tensors still mapped
            _chunk_backward(ctx, flats, flat_grad, trainable, grad_inputs, totals)
        per_param = iter(totals)
        param_grads = [next(per_param) if need else None for need in need_params]
        grad_inputs = [
            None if g is None else g.view_as(t) for g, t in zip(grad_inputs, inputs, strict=True)
        ]
        return None, None, None, *grad_inputs, *param_grads


def token_chunked_checkpoint(
    fn: Callable[..., Tensor],
    x: Tensor | Sequence[Tensor],
    params: Sequence[Tensor],
    chunk_tokens: int,
) -> Tensor:
    """`fn(x)` for a per-token `fn` (rows of x independent), keeping only `x` for backward.

    `x` may be a sequence of tensors with the same rows (`fn(*x)`). `params` are the
    tensors `fn` uses that may need gradients (its module's parameters). The forward
    runs `fn` on `chunk_tokens` rows at a time without a graph; the backward recomputes
    and differentiates one chunk at a time.
    """
    inputs = (x,) if isinstance(x, Tensor) else tuple(x)
    if not torch.is_grad_enabled():
        return fn(*inputs)
    return _TokenChunked.apply(fn, chunk_tokens, len(inputs), *inputs, *params)


def _has_hooks(module: nn.Module) -> bool:
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in module.modules()
    )


def _chunkable_mlp(block: nn.Module) -> bool:
    dropout = block.mlp.dropout and block.training
    return not dropout and not _has_hooks(block.mlp) and not _has_hooks(block.mlp_norms)


def _projected_attention_step(
    block: nn.Module, x: Tensor, rotary: tuple[Tensor, Tensor] | None, mask: Tensor | None
) -> Tensor:
    """The attention sublayer through `attn.normed_forward` (the fused kernel keeps x,
    its output and log-sum-exp), under the block's norm placement as `residual_step`."""
    norms, attn = block.attn_norms, block.attn
    if norms.placement == "pre":
        return x + attn.normed_forward(x, norms.inner, rotary, mask)
    if norms.placement == "peri":
        return x + norms.outer(attn.normed_forward(x, norms.inner, rotary, mask))
    return norms.outer(x + attn.normed_forward(x, None, rotary, mask))


def _projected_block(
    block: nn.Module, x: Tensor, rotary: tuple[Tensor, Tensor] | None, mask: Tensor | None
) -> Tensor:
    """A Pre-LN block with the attention heads from the fused kernel and everything
    after them (output projection, residual, the MLP sublayer: all per token) in token
    chunks: the block keeps its input and the heads' output, not the MLP's input."""

    def rest(h: Tensor, a: Tensor) -> Tensor:
        h = h + block.attn.proj(a)
        return block.mlp_norms.residual_step(h, block.mlp)

    params = [*block.attn.proj.parameters(), *block.mlp_norms.parameters()]
    params += block.mlp.parameters()
    chunk = max(1, MLP_CHUNK_ELEMENTS // max(1, block.mlp.up.out_features))
    inner = block.attn_norms.inner
    return block.attn.projected_block(x, inner, rotary, mask, rest, params, chunk)


def _uses_projected_attention(block: nn.Module, x: Tensor, mask: Tensor | None) -> bool:
    uses = getattr(block.attn, "uses_projected_path", None)
    return uses is not None and not _has_hooks(block.attn_norms) and uses(x, mask)


def _fuses_block(block: nn.Module) -> bool:
    pre = block.attn_norms.placement == "pre" and block.mlp_norms.placement == "pre"
    return pre and _chunkable_mlp(block) and not _has_hooks(block.attn.proj)


def sublayer_checkpointed_forward(
    block: nn.Module,
    x: Tensor,
    rotary: tuple[Tensor, Tensor] | None = None,
    mask: Tensor | None = None,
    cache: object = None,
) -> Tensor:
    plain = type(block).forward
    # A KV cache (generation) or no gradients: nothing to save, run as is.
    if not torch.is_grad_enabled() or cache is not None:
        return plain(block, x, rotary, mask, cache)

    def attention_step(h: Tensor) -> Tensor:
        return block.attn_norms.residual_step(h, lambda n: block.attn(n, rotary, mask, None))

    def mlp_step(h: Tensor) -> Tensor:
        return block.mlp_norms.residual_step(h, block.mlp)

    if _uses_projected_attention(block, x, mask):
        if _fuses_block(block):
            return _projected_block(block, x, rotary, mask)
        x = _projected_attention_step(block, x, rotary, mask)
    else:
        x = checkpoint(attention_step, x, use_reentrant=False, context_fn=attention_saving_contexts)
    if not _chunkable_mlp(block):
        return checkpoint(mlp_step, x, use_reentrant=False)
    params = [*block.mlp_norms.parameters(), *block.mlp.parameters()]
    hidden = max(1, block.mlp.up.out_features)
    return token_chunked_checkpoint(mlp_step, x, params, max(1, MLP_CHUNK_ELEMENTS // hidden))


# Allocations from this size on get their own memory map from glibc, returned to the
# system when freed (see `map_large_allocations`).
MMAP_THRESHOLD_BYTES = 1 << 20


def map_large_allocations(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc map every allocation of `threshold` bytes or more on its own (a fixed
    `M_MMAP_THRESHOLD`), for the rest of the process; False where malloc is not glibc's.

    glibc's default threshold rises to the largest block freed so far (up to 32 MiB),
    after which a long-context step's tensors of a few MiB come from the heap, whose
    freed middle stays resident: measured at T = 8,192, the heap grew by 62 MB during
    one attention backward whose live tensors grew by 8 MB. Mapped blocks go back to
    the system when freed, so resident memory follows the live tensors, for a page
    fault per new page of a large tensor.
    """
    return fix_mmap_threshold(threshold)


class _HeapLoss:
    """`loss(...)` under `heap_allocations` (its chunks from the heap)."""

    def __init__(self, loss: Callable[..., Tensor]) -> None:
        self.loss = loss

    def __call__(self, *args, **kwargs) -> Tensor:
        with heap_allocations():
            return self.loss(*args, **kwargs)


def small_chunk_loss(model: nn.Module):
    """The model's kernel loss with `LOSS_CHUNK_ELEMENTS` chunks, or None (another loss,
    or a loss_fn the user assigned)."""
    name = getattr(getattr(model, "config", None), "loss_impl", None)
    if name is None or model.loss_fn is not loss_impl(name):
        return None
    loss = kernel_loss(name, LOSS_CHUNK_ELEMENTS)
    return None if loss is None else _HeapLoss(loss)


@contextmanager
def checkpointed_sublayers(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, each block of the GPT `model` keeps its two sublayer inputs,
    and its chunked loss works in chunks of `LOSS_CHUNK_ELEMENTS` logits. The process
    keeps glibc's fixed mmap threshold after the block (`map_large_allocations`)."""
    wrapped = [block for block in model.blocks if "forward" not in vars(block)]
    for block in wrapped:
        # A bound method: a deepcopy of the model binds the copy's forward to the copy.
        block.forward = types.MethodType(sublayer_checkpointed_forward, block)
    map_large_allocations()
    loss_fn, small = model.loss_fn, small_chunk_loss(model)
    if small is not None:
        model.loss_fn = small
    try:
        yield model
    finally:
        for block in wrapped:
            del block.forward
        model.loss_fn = loss_fn
