"""RMSNorm and LayerNorm over the last dimension: reference, native, Triton.

Implementations, chosen by `rms_norm` / `layer_norm` (the dispatchers):

- `reference`: the formula written out in PyTorch, computed in fp32 and cast back
  (autograd differentiates it; every other path is tested against it).
- `native`: PyTorch's own fused kernels (`F.rms_norm`, `F.layer_norm`), the CPU path:
  one pass forward and backward in ATen's C++ or CUDA code.
- `triton`: fused forward and backward Triton kernels on CUDA (`norms_triton.py`), which
  keep only the per-row statistics (mean, 1/rms) for the backward.

`RMSNorm` and `LayerNorm` are `nn.Module`s over these for the model to use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlm.errors import ConfigError
from seqlm.kernels.dispatch import choose_impl

IMPLEMENTATIONS: tuple[str, ...] = ("reference", "native", "triton")


def _check_norm_arguments(op: str, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> None:
    if x.dim() == 0:
        raise ConfigError(f"{op}: input needs at least one dimension")
    width = x.shape[-1]
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != (width,):
            raise ConfigError(f"{op}: {name} must have shape ({width},), not {tuple(param.shape)}")


def rms_norm_reference(x: Tensor, weight: Tensor | None, eps: float = 1e-6) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, in fp32, returned in x's dtype."""
    _check_norm_arguments("rms_norm", x, weight, None)
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        normed = normed * weight.float()
    return normed.to(x.dtype)


def layer_norm_reference(
    x: Tensor, weight: Tensor | None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias (biased variance), in fp32."""
    _check_norm_arguments("layer_norm", x, weight, bias)
    x32 = x.float()
    centred = x32 - x32.mean(dim=-1, keepdim=True)
    normed = centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        normed = normed * weight.float()
    if bias is not None:
        normed = normed + bias.float()
    return normed.to(x.dtype)


def _low_precision_on_cpu(x: Tensor) -> bool:
    """ATen's CPU norms keep bf16/fp16 intermediates (the weight gradient, summed over
    rows, drifts by ~20% in bf16); compute those in fp32 like the reference. CUDA's
    kernels accumulate in fp32 already."""
    return x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16)


def rms_norm_native(x: Tensor, weight: Tensor | None, eps: float = 1e-6) -> Tensor:
    """PyTorch's fused RMSNorm."""
    _check_norm_arguments("rms_norm", x, weight, None)
    if _low_precision_on_cpu(x):
        w32 = weight.float() if weight is not None else None
        return F.rms_norm(x.float(), (x.shape[-1],), w32, eps).to(x.dtype)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def layer_norm_native(
    x: Tensor, weight: Tensor | None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """PyTorch's fused LayerNorm."""
    _check_norm_arguments("layer_norm", x, weight, bias)
    if _low_precision_on_cpu(x):
        w32 = weight.float() if weight is not None else None
        b32 = bias.float() if bias is not None else None
        return F.layer_norm(x.float(), (x.shape[-1],), w32, b32, eps).to(x.dtype)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def _choose(op: str, x: Tensor, impl: str) -> str:
    return choose_impl(op, impl, IMPLEMENTATIONS, x.device, ("triton", "native"))


def rms_norm(x: Tensor, weight: Tensor | None, eps: float = 1e-6, impl: str = "auto") -> Tensor:
    """RMSNorm over the last dimension; `impl` is auto, reference, native or triton."""
    chosen = _choose("rms_norm", x, impl)
    if chosen == "reference":
        return rms_norm_reference(x, weight, eps)
    if chosen == "triton":
        from seqlm.kernels.norms_triton import rms_norm_triton

        _check_norm_arguments("rms_norm", x, weight, None)
        return rms_norm_triton(x, weight, eps)
    return rms_norm_native(x, weight, eps)


def layer_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    impl: str = "auto",
) -> Tensor:
    """LayerNorm over the last dimension; `impl` is auto, reference, native or triton."""
    chosen = _choose("layer_norm", x, impl)
    if chosen == "reference":
        return layer_norm_reference(x, weight, bias, eps)
    if chosen == "triton":
        from seqlm.kernels.norms_triton import layer_norm_triton

        _check_norm_arguments("layer_norm", x, weight, bias)
        return layer_norm_triton(x, weight, bias, eps)
    return layer_norm_native(x, weight, bias, eps)


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (initialised to 1), dispatched by `impl`."""

    def __init__(self, width: int, eps: float = 1e-6, impl: str = "auto") -> None:
        super().__init__()
        self.eps = eps
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps, self.impl)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, impl={self.impl!r}"


class LayerNorm(nn.Module):
    """LayerNorm with a learned scale and optional bias, dispatched by `impl`."""

    def __init__(
        self, width: int, eps: float = 1e-5, bias: bool = True, impl: str = "auto"
    ) -> None:
        super().__init__()
        self.eps = eps
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps, self.impl)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}, impl={self.impl!r}"
