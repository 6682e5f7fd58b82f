"""Fused RMSNorm / LayerNorm forward and backward in Triton (CUDA only).

Forward: one program per row normalises the row in registers and keeps only its mean
and 1/std for the backward (the reference keeps the fp32 copy of x and several
intermediates). Backward: each program takes a contiguous run of rows, writes their
input gradients and sums its rows' weight (and bias) gradients in registers; the few
per-program partial sums are added in PyTorch.

Testing status: checked against `norms.rms_norm_reference` / `layer_norm_reference` on
CPU under Triton's interpreter (`TRITON_INTERPRET=1`,
tests/kernels/test_triton_interpreter.py) and by the `cuda`-marked tests when a GPU is
there; they passed on an H200 in session 16, but the kernel took 0.7 ms against torch's
native 0.5 ms (8192 x 1024), so `dispatch.TRITON_VERIFIED_ON_GPU` leaves it out of
automatic selection; ask for it with `impl="triton"`.

This module imports triton at import time: import it only where `triton_installed()`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqlm.errors import ConfigError

# A row must fit in one block of registers; wider rows would need a looped kernel.
MAX_WIDTH = 65536


@triton.jit
def _norm_forward(
    x_ptr,
    weight_ptr,
    bias_ptr,
    y_ptr,
    mean_ptr,
    rstd_ptr,
    n_columns,
    eps,
    IS_RMS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    columns = tl.arange(0, BLOCK)
    in_row = columns < n_columns
    x = tl.load(x_ptr + row * n_columns + columns, mask=in_row, other=0.0).to(tl.float32)
    if IS_RMS:
        mean = 0.0
        centred = x
    else:
        mean = tl.sum(x, axis=0) / n_columns
        centred = tl.where(in_row, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / n_columns + eps)
    y = centred * rstd
    if HAS_WEIGHT:
        y = y * tl.load(weight_ptr + columns, mask=in_row, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + columns, mask=in_row, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * n_columns + columns, y.to(y_ptr.dtype.element_ty), mask=in_row)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _norm_backward(
    grad_y_ptr,
    x_ptr,
    weight_ptr,
    mean_ptr,
    rstd_ptr,
    grad_x_ptr,
    grad_weight_partial_ptr,
    grad_bias_partial_ptr,
    n_rows,
    n_columns,
    rows_per_program,
    IS_RMS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    columns = tl.arange(0, BLOCK)
    in_row = columns < n_columns
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + columns, mask=in_row, other=0.0).to(tl.float32)
    grad_weight = tl.zeros((BLOCK,), dtype=tl.float32)
    grad_bias = tl.zeros((BLOCK,), dtype=tl.float32)
    # int64 row numbers, so row * n_columns cannot overflow on large inputs.
    first = program.to(tl.int64) * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    for row in range(first, last):
        offset = row * n_columns
        x = tl.load(x_ptr + offset + columns, mask=in_row, other=0.0).to(tl.float32)
        grad_y = tl.load(grad_y_ptr + offset + columns, mask=in_row, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row)
        mean = tl.load(mean_ptr + row)
        x_hat = tl.where(in_row, (x - mean) * rstd, 0.0)
        grad_x_hat = grad_y
        if HAS_WEIGHT:
            grad_x_hat = grad_y * weight
        # d x = rstd * (d x_hat - mean(d x_hat) - x_hat * mean(d x_hat * x_hat));
        # RMSNorm has no centring, so no mean(d x_hat) term.
        projection = tl.sum(grad_x_hat * x_hat, axis=0) / n_columns
        if IS_RMS:
            grad_x = (grad_x_hat - x_hat * projection) * rstd
        else:
            grad_x = (
                grad_x_hat - tl.sum(grad_x_hat, axis=0) / n_columns - x_hat * projection
            ) * rstd
        tl.store(grad_x_ptr + offset + columns, grad_x.to(grad_x_ptr.dtype.element_ty), mask=in_row)
        grad_weight += grad_y * x_hat
        grad_bias += grad_y
    if HAS_WEIGHT:
        tl.store(grad_weight_partial_ptr + program * n_columns + columns, grad_weight, mask=in_row)
    if HAS_BIAS:
        tl.store(grad_bias_partial_ptr + program * n_columns + columns, grad_bias, mask=in_row)


def _backward_programs(n_rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        processors = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows, 4 * processors))
    return max(1, min(n_rows, 8))  # the interpreter: a few programs exercise the split


class _TritonNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, is_rms: bool):
        width = x.shape[-1]
        if width > MAX_WIDTH:
            raise ConfigError(
                f"the Triton norm kernels take rows up to {MAX_WIDTH} wide, not {width}"
            )
        rows = x.reshape(-1, width).contiguous()
        n_rows = rows.shape[0]
        y = torch.empty_like(rows)
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(width)
        if n_rows > 0:
            _norm_forward[(n_rows,)](
                rows,
                weight if weight is not None else rows,
                bias if bias is not None else rows,
                y,
                mean,
                rstd,
                width,
                eps,
                IS_RMS=is_rms,
                HAS_WEIGHT=weight is not None,
                HAS_BIAS=bias is not None,
                BLOCK=block,
                num_warps=min(16, max(1, block // 256)),
            )
        ctx.save_for_backward(rows, weight, mean, rstd)
        ctx.is_rms = is_rms
        ctx.has_bias = bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        rows, weight, mean, rstd = ctx.saved_tensors
        n_rows, width = rows.shape
        grad_rows = grad_y.reshape(-1, width).contiguous()
        grad_x = torch.empty_like(rows)
        programs = _backward_programs(n_rows, rows.device)
        partial = (programs, width)
        grad_weight_partial = torch.zeros(partial, dtype=torch.float32, device=rows.device)
        grad_bias_partial = torch.zeros(partial, dtype=torch.float32, device=rows.device)
        block = triton.next_power_of_2(width)
        if n_rows > 0:
            _norm_backward[(programs,)](
                grad_rows,
                rows,
                weight if weight is not None else rows,
                mean,
                rstd,
                grad_x,
                grad_weight_partial,
                grad_bias_partial,
                n_rows,
                width,
                triton.cdiv(n_rows, programs),
                IS_RMS=ctx.is_rms,
                HAS_WEIGHT=weight is not None,
                HAS_BIAS=ctx.has_bias,
                BLOCK=block,
                num_warps=min(16, max(1, block // 256)),
            )
        grad_weight = grad_weight_partial.sum(0).to(weight.dtype) if weight is not None else None
        grad_bias = grad_bias_partial.sum(0).to(ctx.bias_dtype) if ctx.has_bias else None
        return grad_x.view(ctx.shape), grad_weight, grad_bias, None, None


def rms_norm_triton(x: Tensor, weight: Tensor | None, eps: float = 1e-6) -> Tensor:
    """RMSNorm by the fused Triton kernels (same result as `rms_norm_reference`)."""
    return _TritonNorm.apply(x, weight, None, eps, True)


def layer_norm_triton(
    x: Tensor, weight: Tensor | None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """LayerNorm by the fused Triton kernels (same result as `layer_norm_reference`)."""
    return _TritonNorm.apply(x, weight, bias, eps, False)
