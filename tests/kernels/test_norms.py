"""RMSNorm / LayerNorm paths against the written-out reference, outputs and gradients.

Tolerances: fp32 1e-5 (outputs, input gradients) and 1e-4 for the weight and bias
gradients, which sum over every row; bf16 2e-2.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.kernels.dispatch import triton_installed
from seqlm.kernels.norms import (
    LayerNorm,
    RMSNorm,
    layer_norm,
    layer_norm_reference,
    rms_norm,
    rms_norm_reference,
)

SHAPES = [(4, 64), (5, 123, 123), (2, 7, 3, 50)]
FP32 = {"rtol": 1e-5, "atol": 1e-5}
FP32_PARAMS = {"rtol": 1e-4, "atol": 1e-4}
BF16 = {"rtol": 2e-2, "atol": 2e-2}


def outputs_and_grads(norm, shape, *, with_weight, with_bias, dtype=torch.float32, device="cpu"):
    generator = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=generator) * 3 + 1).to(device, dtype).requires_grad_(True)
    width = shape[-1]
    weight = (
        (torch.randn(width, generator=generator) + 1).to(device, dtype).requires_grad_(True)
        if with_weight
        else None
    )
    bias = (
        torch.randn(width, generator=generator).to(device, dtype).requires_grad_(True)
        if with_bias
        else None
    )
    cotangent = torch.randn(shape, generator=generator).to(device, dtype)
    y = norm(x, weight, bias)
    y.backward(cotangent)
    grads = [t.grad if t is not None else None for t in (x, weight, bias)]
    return y.detach(), grads


def compare(got, expected, dtype=torch.float32):
    (y_got, grads_got), (y_exp, grads_exp) = got, expected
    assert y_got.dtype == y_exp.dtype
    plain = FP32 if dtype == torch.float32 else BF16
    params = FP32_PARAMS if dtype == torch.float32 else BF16
    torch.testing.assert_close(y_got.float(), y_exp.float(), **plain)
    torch.testing.assert_close(grads_got[0].float(), grads_exp[0].float(), **plain)
    for a, b in zip(grads_got[1:], grads_exp[1:], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.float(), b.float(), **params)


def rms(impl):
    return lambda x, w, b: rms_norm(x, w, 1e-6, impl=impl)


def ln(impl):
    return lambda x, w, b: layer_norm(x, w, b, 1e-5, impl=impl)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_native_matches_reference(shape, with_weight):
    kwargs = {"with_weight": with_weight, "with_bias": False}
    compare(
        outputs_and_grads(rms("native"), shape, **kwargs),
        outputs_and_grads(rms("reference"), shape, **kwargs),
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("with_weight", "with_bias"), [(True, True), (True, False), (False, False)]
)
def test_layer_norm_native_matches_reference(shape, with_weight, with_bias):
    kwargs = {"with_weight": with_weight, "with_bias": with_bias}
    compare(
        outputs_and_grads(ln("native"), shape, **kwargs),
        outputs_and_grads(ln("reference"), shape, **kwargs),
    )


@pytest.mark.parametrize("norm", [rms, ln])
def test_bf16_native_follows_reference(norm):
    kwargs = {"with_weight": True, "with_bias": norm is ln, "dtype": torch.bfloat16}
    compare(
        outputs_and_grads(norm("native"), (3, 17, 96), **kwargs),
        outputs_and_grads(norm("reference"), (3, 17, 96), **kwargs),
        dtype=torch.bfloat16,
    )


def test_reference_values_by_hand():
    x = torch.tensor([[3.0, 4.0]])
    # mean of squares 12.5: x / sqrt(12.5)
    expected_rms = x / 12.5**0.5
    torch.testing.assert_close(rms_norm_reference(x, None, eps=0.0), expected_rms)
    # mean 3.5, variance 0.25: (x - 3.5) / 0.5 = [-1, 1], then * w + b
    got = layer_norm_reference(x, torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0]), eps=0.0)
    torch.testing.assert_close(got, torch.tensor([[-1.0, 4.0]]))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    width=st.integers(1, 70),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_any_shape_and_scale(rows, width, scale, seed):
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed)) * scale
    weight = torch.linspace(0.5, 1.5, width)
    torch.testing.assert_close(
        rms_norm(x, weight, impl="native"), rms_norm_reference(x, weight), **FP32
    )
    torch.testing.assert_close(
        layer_norm(x, weight, None, impl="native"),
        layer_norm_reference(x, weight, None),
        rtol=1e-4,
        atol=1e-4,
    )


def test_modules_use_the_dispatcher_and_learn():
    norm = RMSNorm(8)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(norm(x), rms_norm_reference(x, norm.weight.detach()))
    layer = LayerNorm(8, bias=False, impl="reference")
    assert layer.bias is None
    layer(x).pow(2).sum().backward()
    assert layer.weight.grad is not None
    assert "impl='reference'" in repr(layer)


def test_bad_arguments_raise_config_errors():
    x = torch.randn(2, 8)
    with pytest.raises(ConfigError, match="weight must have shape"):
        rms_norm(x, torch.ones(7))
    with pytest.raises(ConfigError, match="bias must have shape"):
        layer_norm(x, torch.ones(8), torch.ones(3))
    with pytest.raises(ConfigError, match="unknown implementation"):
        rms_norm(x, None, impl="apex")
    with pytest.raises(ConfigError, match="Triton kernel needs a CUDA device"):
        layer_norm(x, None, impl="triton")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(not triton_installed(), reason="needs triton")
@pytest.mark.parametrize("shape", [*SHAPES, (3, 1000, 4096)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", [rms, ln])
def test_triton_matches_reference_on_cuda(shape, dtype, norm):
    kwargs = {"with_weight": True, "with_bias": norm is ln, "dtype": dtype, "device": "cuda"}
    compare(
        outputs_and_grads(norm("triton"), shape, **kwargs),
        outputs_and_grads(norm("reference"), shape, **kwargs),
        dtype=dtype,
    )
