"""linear(gelu(h)) saving only h: same values and gradients, one (N, 4C) tensor fewer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqlm.kernels.gelu_linear import gelu_linear


def _inputs(bias: bool, dtype=torch.float64):
    generator = torch.Generator().manual_seed(3)
    h = torch.randn(3, 17, 24, generator=generator, dtype=dtype).requires_grad_()
    weight = torch.randn(6, 24, generator=generator, dtype=dtype).requires_grad_()
    b = torch.randn(6, generator=generator, dtype=dtype).requires_grad_() if bias else None
    grad_out = torch.randn(3, 17, 6, generator=generator, dtype=dtype)
    return h, weight, b, grad_out


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_values_and_gradients_equal_the_plain_composition(bias, approximate):
    h, weight, b, grad_out = _inputs(bias)
    leaves = [t for t in (h, weight, b) if t is not None]
    plain = F.linear(F.gelu(h, approximate=approximate), weight, b)
    expected = torch.autograd.grad((plain * grad_out).sum(), leaves)
    lean = gelu_linear(h, weight, b, approximate=approximate)
    got = torch.autograd.grad((lean * grad_out).sum(), leaves)
    torch.testing.assert_close(lean, plain, rtol=0, atol=0)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_float32_gradients_match_to_rounding():
    h, weight, b, grad_out = _inputs(True, torch.float32)
    plain = torch.autograd.grad((F.linear(F.gelu(h), weight, b) * grad_out).sum(), (h, weight, b))
    lean = torch.autograd.grad((gelu_linear(h, weight, b) * grad_out).sum(), (h, weight, b))
    for a, e in zip(lean, plain, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_only_the_input_and_weight_are_saved():
    h, weight, b, _ = _inputs(True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        gelu_linear(h, weight, b)
    assert [t.shape for t in saved] == [h.shape, weight.shape]
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        F.linear(F.gelu(h), weight, b)
    # plain autograd keeps h and gelu(h) (the latter as the linear layer's 2-d view)
    assert sum(t.numel() == h.numel() for t in saved) == 2


def test_frozen_weight_and_no_grad():
    h, weight, b, grad_out = _inputs(True)
    frozen = weight.detach()
    (grad_h,) = torch.autograd.grad((gelu_linear(h, frozen, None) * grad_out).sum(), (h,))
    (expected,) = torch.autograd.grad((F.linear(F.gelu(h), frozen) * grad_out).sum(), (h,))
    torch.testing.assert_close(grad_h, expected)
    with torch.no_grad():
        out = gelu_linear(h, weight, b)
    assert out.grad_fn is None
    torch.testing.assert_close(out, F.linear(F.gelu(h), weight, b).detach())
