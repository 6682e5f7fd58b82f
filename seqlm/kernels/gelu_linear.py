"""`linear(gelu(h))` that keeps only `h` for the backward (the MLP's second half).

Autograd through `F.linear(F.gelu(h), W, b)` saves both `h` (for GELU's derivative)
and `gelu(h)` (the linear layer's input, for W's gradient): two (N, 4C) tensors per
block, the largest activations of a training step. This function saves `h` and
recomputes `gelu(h)` in the backward (one elementwise pass, cheap next to the
matmuls), so a long-context step holds one (N, 4C) tensor per block instead of two.

The backward uses the same ATen kernels autograd would (`gelu`, `gelu_backward`, two
matmuls), so values and gradients equal the plain composition to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _GeluLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> Tensor:
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        ctx.approximate = approximate
        return F.linear(F.gelu(h, approximate=approximate), weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        h, weight = ctx.saved_tensors
        grad_h = grad_weight = grad_bias = None
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            activation = F.gelu(h, approximate=ctx.approximate)
            grad_weight = flat_grad.T @ activation.reshape(-1, activation.shape[-1])
            del activation  # free it before the (N, 4C) gradient below is allocated
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        if ctx.needs_input_grad[0]:
            grad_h = torch.ops.aten.gelu_backward(grad_out @ weight, h, approximate=ctx.approximate)
        return grad_h, grad_weight, grad_bias, None


def gelu_linear(
    h: Tensor, weight: Tensor, bias: Tensor | None = None, *, approximate: str = "none"
) -> Tensor:
    """`F.linear(F.gelu(h, approximate=...), weight, bias)`, saving only `h` for backward.

    Without gradients (eval, inference) and under torch.compile (which fuses and
    plans its own memory) it is the plain composition.
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return F.linear(F.gelu(h, approximate=approximate), weight, bias)
    return _GeluLinear.apply(h, weight, bias, approximate)
