"""Causal document attention fused with its norm, q/k/v projection and rotary (CPU).

`projected_attention(x, weight, bias, n_head, doc_ids, rotary, norm=...)` is, exactly,

    q, k, v = (norm(x) @ weight.T + bias) split into heads, rotary on q and k,
    causal attention within each document segment (`blockwise_attention`'s rule),

returned as (B, T, C) with head h in channels h*d..(h+1)*d (what the output projection
takes). It is one autograd Function that keeps only its input `x`, its output and the
attention's log-sum-exp for the backward: no q/k/v projection, rotated q/k or gathered
bucket is kept, and none exists for more than one group of segments and one head at a
time, forward or backward. The work goes segment bucket by bucket (as in
`blockwise_attention.document_attention`: segments of similar length share a bucket,
one `is_causal` flash call each), each bucket split into groups of segments of at
most `GROUP_TOKENS` padded tokens, padded at the end to the group's longest segment,
and each group head by head:

- forward: gather the group's rows of `x`, norm them, project one head's q, k, v,
  rotate, run the flash kernel (`aten._scaled_dot_product_flash_attention_for_cpu`),
  write its output and log-sum-exp;
- backward: the same gathers, norm and projections again (linear in T), then the
  flash kernel's own backward with the saved output and log-sum-exp (the attention is
  not recomputed), the rotation's and projection's backward by hand, and the norm's
  by autograd on the group.

A padded position reads its segment's first row; under the causal rule no real query
sees it, its output goes to a spare row, and its gradient is zero. Kernels are leaves:
the norm arrives as a callable with its parameters, the rotation is done here.
tests/kernels/test_projected_attention.py checks it against the dense reference.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlm.kernels.blockwise_attention import bucket_length, document_segments

# Padded tokens per group of segments: bounds every per-group temporary (the gathered
# rows, their norm, one head's q/k/v) at GROUP_TOKENS x width; a longer segment is its
# own group.
GROUP_TOKENS = 2048


@dataclass(frozen=True)
class _Group:
    read: Tensor  # (n, size) flat row each padded position reads
    write: Tensor  # (n, size) flat row its output goes to (the spare row when padded)
    real: Tensor  # (n, size) bool: a real position


def _plan(doc_ids: Tensor | None, batch: int, length: int, group_tokens: int) -> list[_Group]:
    """The groups of segments, bucket by bucket, of a (B, T) layout."""
    if doc_ids is None:  # one segment per row
        starts = torch.arange(batch) * length
        lengths = torch.full((batch,), length)
    else:
        starts, lengths = document_segments(doc_ids)
    rows = batch * length
    buckets = torch.tensor([bucket_length(int(n)) for n in lengths])
    groups = []
    for size in buckets.unique().tolist():
        chosen = (buckets == size).nonzero().flatten()
        per_group = max(1, group_tokens // size)
        for part in chosen.split(per_group):
            # Padded to the group's longest segment, not the bucket: a segment alone in
            # its group is not padded at all (attention work is quadratic in it).
            longest = int(lengths[part].max())
            index = starts[part, None] + torch.arange(longest)[None, :]
            real = index < (starts + lengths)[part, None]
            read = torch.where(real, index, starts[part, None])
            write = torch.where(real, index, torch.full_like(index, rows))
            groups.append(_Group(read, write, real))
    return groups


@functools.cache
def glibc_function(name: str) -> Callable[..., int] | None:
    """glibc's function `name` through ctypes (loaded once), or None where the C library
    is not glibc."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Hand the pages glibc holds free back to the system (`malloc_trim(0)`; nothing
    elsewhere). The backward runs where a step's memory peaks, after the forward's
    temporaries were freed into the heap's middle, where glibc keeps them resident."""
    trim = glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
_M_TRIM_THRESHOLD = -1
# glibc's M_TRIM_THRESHOLD once the mmap threshold is fixed (its default), and within
# `heap_allocations`.
DEFAULT_TRIM_BYTES = 128 << 10
HEAP_TRIM_BYTES = 1 << 30
# The threshold `fix_mmap_threshold` fixed (None: glibc's own, adjusting one).
_fixed_threshold: int | None = None
# Largest M_MMAP_THRESHOLD glibc takes on 64-bit (HEAP_MAX_SIZE / 2).
HEAP_THRESHOLD_BYTES = 32 << 20


def fix_mmap_threshold(threshold: int) -> bool:
    """glibc's `mallopt(M_MMAP_THRESHOLD, threshold)`, remembered for `heap_allocations`;
    False where malloc is not glibc's."""
    global _fixed_threshold
    mallopt = glibc_function("mallopt")
    if mallopt is None or not mallopt(_M_MMAP_THRESHOLD, threshold):
        return False
    _fixed_threshold = threshold
    return True


@contextmanager
def heap_allocations(threshold: int | None = HEAP_THRESHOLD_BYTES) -> Iterator[None]:
    """Within: glibc maps allocations from `threshold` bytes on (None: the fixed
    threshold, unchanged) and does not shrink its heap at each free (M_TRIM_THRESHOLD
    1 GiB); on exit the heap's free pages go back (`malloc_trim(0)`) and the fixed
    thresholds return. Nothing where `fix_mmap_threshold` fixed none.

    For a loop that allocates and frees tensors of the same few sizes many times (the
    loss's chunks, the MLP's token chunks): a mapped tensor, or a heap top given back
    at each free, is zero-filled page by page by the kernel at first touch again (page
    faults, system CPU time); a freed heap chunk is reused as it is. The loop's
    temporaries are freed by its end, so the trim leaves resident what is live."""
    mallopt = glibc_function("mallopt")
    fixed = _fixed_threshold
    if mallopt is None or fixed is None:
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, fixed if threshold is None else threshold)
    mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES)
    try:
        yield
    finally:
        release_free_memory()
        mallopt(_M_TRIM_THRESHOLD, _trim_threshold_at_start())
        mallopt(_M_MMAP_THRESHOLD, fixed)


def _trim_threshold_at_start() -> int:
    """The trim threshold the process started with: the user's MALLOC_TRIM_THRESHOLD_
    (glibc reads it at start-up) where set, glibc's default otherwise."""
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    return int(value) if value.isdigit() else DEFAULT_TRIM_BYTES


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-split rotary (pairs (c, c + d/2)), as `seqlm.model.positions.apply_rotary`."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class _Setup:
    """Per-call constants shared by forward and backward."""

    def __init__(self, x: Tensor, weight: Tensor, bias: Tensor | None, n_head: int, rotary):
        batch, length, width = x.shape
        self.batch, self.length, self.width, self.heads = batch, length, width, n_head
        self.head_dim = width // n_head
        d = self.head_dim
        # (H, 3d, C): head h's q, k and v rows of the fused projection.
        self.weights = weight.detach().view(3, n_head, d, width).transpose(0, 1).reshape(-1, width)
        self.weights = self.weights.view(n_head, 3 * d, width)
        self.biases = (
            None
            if bias is None
            else bias.detach().view(3, n_head, d).transpose(0, 1).reshape(n_head, 3 * d)
        )
        self.rotary = None
        if rotary is not None:
            cos, sin = rotary
            if cos.dim() == 2:  # (T, d/2): the same positions in every row
                cos = cos.repeat(batch, 1)
                sin = sin.repeat(batch, 1)
            self.rotary = (cos.reshape(batch * length, -1), sin.reshape(batch * length, -1))

    def angles(self, group: _Group) -> tuple[Tensor, Tensor] | None:
        if self.rotary is None:
            return None
        cos, sin = (t[group.read][:, None] for t in self.rotary)  # (n, 1, size, d/2)
        return cos.to(self.weights.dtype), sin.to(self.weights.dtype)

    def head_parts(self, head: int) -> list[tuple[Tensor, Tensor | None]]:
        """Head `head`'s (weight (d, C), bias (d,) or None) of q, k and v."""
        weights = self.weights[head].split(self.head_dim)
        if self.biases is None:
            return [(w, None) for w in weights]
        return list(zip(weights, self.biases[head].split(self.head_dim), strict=True))

    def head_qkv(self, normed: Tensor, head: int, angles) -> list[Tensor]:
        """One head's q, k, v (n, 1, size, d) of a group's normed rows (n, size, C), each
        its own tensor (so the unrotated q and k are freed at once)."""
        parts = []
        for i, (weight, bias) in enumerate(self.head_parts(head)):
            part = torch.nn.functional.linear(normed, weight, bias)[:, None]
            parts.append(part if angles is None or i == 2 else _rotate(part, *angles))
        return parts


def _project_back(setup, head, grads, plain, grad_normed, grad_w, grad_b) -> None:
    """Add one head's q/k/v gradients (n, 1, size, d) through its projection into the
    normed rows' gradient and the weight's and bias's, in place (no (n, size, 3d) copy)."""
    d = setup.head_dim
    rows = plain.flatten(0, 1)
    into = grad_normed.view(-1, grad_normed.shape[-1])
    for i, (grad, (weight, _)) in enumerate(zip(grads, setup.head_parts(head), strict=True)):
        flat = grad.reshape(-1, d)
        grad_w[head, i * d : (i + 1) * d].addmm_(flat.T, rows)
        if grad_b is not None:
            grad_b[head, i * d : (i + 1) * d] += flat.sum(dim=0)
        into.addmm_(flat, weight)


def _normed(norm: Callable[[Tensor], Tensor] | None, x: Tensor) -> Tensor:
    return x if norm is None else norm(x)


def _attend(ctx, x, weight, bias, n_head, doc_ids, rotary, norm, scale, params) -> Tensor:
    """The heads' output (B*T + 1, H, d) (last row: padding); fills `ctx` for the backward."""
    setup = _Setup(x, weight, bias, n_head, rotary)
    rows = setup.batch * setup.length
    groups = _plan(doc_ids, setup.batch, setup.length, GROUP_TOKENS)
    flat = x.detach().reshape(rows, setup.width)
    result = x.new_zeros(rows + 1, n_head, setup.head_dim)
    lses = []
    for group in groups:
        normed = _normed(norm, flat[group.read])
        angles = setup.angles(group)
        lse = []
        for head in range(n_head):
            q, k, v = setup.head_qkv(normed, head, angles)
            out, head_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, True, scale=scale
            )
            result[:, head].index_put_((group.write.flatten(),), out.reshape(-1, setup.head_dim))
            lse.append(head_lse)
            del q, k, v, out
        lses.append(torch.cat(lse, dim=1))  # (n, H, size)
        del normed
    ctx.setup, ctx.groups, ctx.norm, ctx.scale = setup, groups, norm, scale
    ctx.lses, ctx.params = lses, params  # parameters: alive anyway, not saved
    return result


class _Grads:
    """The attention's gradient totals over groups."""

    def __init__(self, ctx, x: Tensor) -> None:
        setup = ctx.setup
        self.x = torch.zeros(setup.batch * setup.length, setup.width, dtype=x.dtype)
        self.w = torch.zeros_like(setup.weights)
        self.b = None if setup.biases is None else torch.zeros_like(setup.biases)
        self.params = [torch.zeros_like(p) for p in ctx.params]

    def weight_and_bias(self, setup) -> tuple[Tensor, Tensor | None]:
        heads, width, d = setup.heads, setup.width, setup.head_dim
        weight = self.w.view(heads, 3, d, width).transpose(0, 1).reshape(3 * width, width)
        if self.b is None:
            return weight, None
        return weight, self.b.view(heads, 3, d).transpose(0, 1).reshape(3 * width)


def _group_backward(ctx, flat, result, group, lse, head_grad, grads: _Grads) -> None:
    """Add one group's gradients; `head_grad(head)` is that head's output gradient
    (n, 1, size, d), zero on padded rows."""
    setup, norm, params = ctx.setup, ctx.norm, ctx.params
    with torch.enable_grad():
        inputs = flat[group.read].requires_grad_(norm is not None)
        normed = _normed(norm, inputs)
    plain = normed.detach()
    grad_normed = torch.zeros_like(plain)
    angles = setup.angles(group)
    for head in range(setup.heads):
        q, k, v = setup.head_qkv(plain, head, angles)
        go = head_grad(head)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            go,
            q,
            k,
            v,
            result[:, head][group.read][:, None],  # padded rows: any finite value
            lse[:, head : head + 1],
            0.0,
            True,
            scale=ctx.scale,
        )
        del q, k, v, go
        if angles is not None:
            cos, sin = angles
            dq, dk = _rotate(dq, cos, -sin), _rotate(dk, cos, -sin)
        _project_back(setup, head, (dq, dk, dv), plain, grad_normed, grads.w, grads.b)
        del dq, dk, dv
    if norm is not None:
        found = torch.autograd.grad(normed, [inputs, *params], grad_normed, allow_unused=True)
        grad_inputs = found[0]
        for total, grad in zip(grads.params, found[1:], strict=True):
            if grad is not None:
                total += grad
    else:
        grad_inputs = grad_normed
    grads.x.index_add_(0, group.read.flatten(), grad_inputs.flatten(0, 1))


class _ProjectedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, n_head, doc_ids, rotary, norm, scale, *params):
        result = _attend(ctx, x, weight, bias, n_head, doc_ids, rotary, norm, scale, params)
        ctx.save_for_backward(x, result)
        return result[:-1].view(x.shape)

    @staticmethod
    def backward(ctx, grad_output):
        release_free_memory()
        x, result = ctx.saved_tensors
        setup = ctx.setup
        flat = x.detach().reshape(-1, setup.width)
        grad_flat = grad_output.reshape(-1, setup.heads, setup.head_dim)
        grads = _Grads(ctx, x)
        for group, lse in zip(ctx.groups, ctx.lses, strict=True):
            keep = group.real[:, None, :, None].to(grad_flat.dtype)

            def head_grad(head, group=group, keep=keep):
                return grad_flat[group.read, head][:, None].mul_(keep)

            _group_backward(ctx, flat, result, group, lse, head_grad, grads)
        weight, bias = grads.weight_and_bias(setup)
        return grads.x.view_as(x), weight, bias, None, None, None, None, None, *grads.params


class _ProjectedBlock(torch.autograd.Function):
    """`rest(x, heads(x))` for a per-token `rest`: the heads' gradient never exists
    whole; each group's rows get theirs from `rest`'s backward just before use."""

    @staticmethod
    def forward(ctx, x, weight, bias, n_head, doc_ids, rotary, norm, scale, rest, chunk, n, *p):
        params, rest_params = p[:n], p[n:]
        result = _attend(ctx, x, weight, bias, n_head, doc_ids, rotary, norm, scale, params)
        ctx.rest, ctx.chunk, ctx.rest_params = rest, chunk, rest_params
        ctx.save_for_backward(x, result)
        flat, heads = x.detach().reshape(-1, x.shape[-1]), result[:-1].view(-1, x.shape[-1])
        out = None
        with heap_allocations():
            for start in range(0, flat.shape[0], chunk):  # in place: no list + cat copy
                piece = rest(flat[start : start + chunk], heads[start : start + chunk])
                if out is None:
                    out = piece.new_empty(flat.shape[0], piece.shape[-1])
                out[start : start + chunk] = piece
                del piece
        return out.view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad_y):
        release_free_memory()
        x, result = ctx.saved_tensors
        setup = ctx.setup
        flat = x.detach().reshape(-1, setup.width)
        heads_flat = result[:-1].view(-1, setup.width)
        grad_y = grad_y.reshape(-1, grad_y.shape[-1])
        grads = _Grads(ctx, x)
        trainable = [q for q in ctx.rest_params if q.requires_grad]
        rest_totals: list[Tensor | None] = [None] * len(trainable)
        for group, lse in zip(ctx.groups, ctx.lses, strict=True):
            rows = group.read[group.real]  # the group's real rows, in layout order
            grad_heads = torch.zeros(*group.read.shape, setup.width, dtype=x.dtype)
            grad_real = grad_heads.view(-1, setup.width)
            real_at = group.real.flatten().nonzero().flatten()
            with heap_allocations(threshold=None):  # the peak: large tensors still mapped
                for part, at in zip(rows.split(ctx.chunk), real_at.split(ctx.chunk), strict=True):
                    pieces = (flat[part].requires_grad_(), heads_flat[part].requires_grad_())
                    with torch.enable_grad():
                        y = ctx.rest(*pieces)
                    found = torch.autograd.grad(y, [*pieces, *trainable], grad_y[part])
                    grads.x[part] += found[0]
                    grad_real[at] = found[1]
                    for i, grad in enumerate(found[2:]):
                        total = rest_totals[i]
                        rest_totals[i] = grad if total is None else total.add_(grad)
                    del y, found, pieces
            per_head = grad_heads.view(*group.read.shape, setup.heads, setup.head_dim)

            def head_grad(head, per_head=per_head):
                return per_head[:, :, head][:, None]

            _group_backward(ctx, flat, result, group, lse, head_grad, grads)
            del grad_heads, grad_real, per_head
        weight, bias = grads.weight_and_bias(setup)
        totals = iter(rest_totals)
        rest_grads = [next(totals) if q.requires_grad else None for q in ctx.rest_params]
        nones = (None,) * 8
        return grads.x.view_as(x), weight, bias, *nones, *grads.params, *rest_grads


def projected_attention(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    n_head: int,
    doc_ids: Tensor | None = None,
    rotary: tuple[Tensor, Tensor] | None = None,
    *,
    norm: Callable[[Tensor], Tensor] | None = None,
    norm_params: Sequence[Tensor] = (),
    scale: float | None = None,
) -> Tensor:
    """Causal attention of `norm(x)`'s heads within documents; (B, T, C), see the module.

    `weight` (3C, C) and `bias` (3C,) are the fused q/k/v projection; `rotary` is
    (cos, sin) of shape (T, d/2) or (B, 1, T, d/2) (the model's rotary output); `doc_ids`
    (B, T) must be contiguous runs of ids (`is_run_layout`), None is one document per
    row. `norm` acts per token; `norm_params` are the tensors it uses that may need
    gradients. CPU, no dropout; x, weight and bias of one floating dtype.
    """
    _check(x, weight, n_head)
    return _ProjectedAttention.apply(
        x, weight, bias, n_head, doc_ids, rotary, norm, scale, *tuple(norm_params)
    )


def projected_attention_block(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    n_head: int,
    doc_ids: Tensor | None,
    rotary: tuple[Tensor, Tensor] | None,
    rest: Callable[[Tensor, Tensor], Tensor],
    rest_params: Sequence[Tensor],
    *,
    chunk_tokens: int,
    norm: Callable[[Tensor], Tensor] | None = None,
    norm_params: Sequence[Tensor] = (),
    scale: float | None = None,
) -> Tensor:
    """`rest(x, projected_attention(x, ...))` for a per-token `rest` (rows independent:
    a block's output projection, residual and MLP sublayer), keeping only `x`, the
    heads' output and the log-sum-exp. `rest` runs on `chunk_tokens` rows at a time
    without a graph, and its backward recomputes it one chunk at a time, group by group,
    so neither its activations nor the heads' gradient exist whole. `rest_params` are
    the tensors `rest` uses that may need gradients."""
    _check(x, weight, n_head)
    norm_params = tuple(norm_params)
    if not torch.is_grad_enabled():
        heads = projected_attention(
            x, weight, bias, n_head, doc_ids, rotary, norm=norm, scale=scale
        )
        return rest(x, heads)
    return _ProjectedBlock.apply(
        x,
        weight,
        bias,
        n_head,
        doc_ids,
        rotary,
        norm,
        scale,
        rest,
        chunk_tokens,
        len(norm_params),
        *norm_params,
        *rest_params,
    )


def _check(x: Tensor, weight: Tensor, n_head: int) -> None:
    if x.device.type != "cpu":
        raise ValueError("projected_attention runs on the CPU (the flash kernel for CPU)")
    if x.shape[-1] % n_head or weight.shape != (3 * x.shape[-1], x.shape[-1]):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit x {tuple(x.shape)}")
