"""The Triton kernels, run on CPU by Triton's interpreter, against the references.

Skipped unless the `triton` package is installed (it is not a dependency) and there is
no GPU (with a GPU the `cuda`-marked tests run the compiled kernels instead). To run
here: `pip install triton` into any folder on PYTHONPATH, then
`python -m pytest tests/kernels/test_triton_interpreter.py`.
The interpreter checks the kernels' arithmetic and indexing, not their compilation or
speed on hardware.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

if torch.cuda.is_available():
    pytest.skip(
        "a GPU is present: the cuda-marked tests run the compiled kernels", allow_module_level=True
    )
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
# Must be set before the kernel modules import triton and decorate their kernels.
os.environ["TRITON_INTERPRET"] = "1"

from seqlm.kernels.linear_cross_entropy import (  # noqa: E402
    chunk_loss_and_grad_torch,
    linear_cross_entropy_chunked,
    linear_cross_entropy_reference,
)
from seqlm.kernels.linear_cross_entropy_triton import chunk_loss_and_grad_triton  # noqa: E402
from seqlm.kernels.norms import layer_norm_reference, rms_norm_reference  # noqa: E402
from seqlm.kernels.norms_triton import layer_norm_triton, rms_norm_triton  # noqa: E402

FP32 = {"rtol": 1e-5, "atol": 1e-5}


@pytest.mark.parametrize("vocab", [1, 7, 4096, 5000, 9001])
@pytest.mark.parametrize("with_scale", [True, False])
def test_cross_entropy_chunk_kernel_matches_torch(vocab, with_scale):
    generator = torch.Generator().manual_seed(vocab)
    logits = torch.randn(13, vocab, generator=generator) * 4
    targets = torch.randint(0, vocab, (13,), generator=generator)
    valid = torch.rand(13, generator=generator) > 0.2
    scale = torch.rand(13, generator=generator) * valid if with_scale else None
    expected_logits, got_logits = logits.clone(), logits.clone()
    expected = chunk_loss_and_grad_torch(expected_logits, targets, valid, scale)
    got = chunk_loss_and_grad_triton(got_logits, targets, valid, scale)
    torch.testing.assert_close(got, expected, **FP32)
    if with_scale:  # without a scale the logits are scratch space, their contents unspecified
        torch.testing.assert_close(got_logits, expected_logits, **FP32)


def test_linear_cross_entropy_with_the_triton_chunk_kernel():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 41, 32, generator=generator)
    weight = torch.randn(1003, 32, generator=generator) / math.sqrt(32)
    targets = torch.randint(0, 1003, (3, 41), generator=generator)
    targets[:, :4] = -100
    results = []
    for loss_fn in (
        linear_cross_entropy_reference,
        lambda h, w, t: linear_cross_entropy_chunked(
            h, w, t, chunk_tokens=16, chunk_kernel=chunk_loss_and_grad_triton
        ),
    ):
        h = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        loss = loss_fn(h, w, targets)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **FP32)


@pytest.mark.parametrize("shape", [(4, 64), (5, 123, 123), (9, 1000)])
@pytest.mark.parametrize(
    ("reference", "fast", "with_bias"),
    [
        (rms_norm_reference, rms_norm_triton, False),
        (layer_norm_reference, layer_norm_triton, True),
        (layer_norm_reference, layer_norm_triton, False),
    ],
)
@pytest.mark.parametrize("with_weight", [True, False])
def test_norm_kernels_match_reference(shape, reference, fast, with_bias, with_weight):
    if with_bias and not with_weight:
        pytest.skip("bias without weight is not a configuration anyone uses")
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=generator) * 2 + 0.5
    width = shape[-1]
    weight = torch.randn(width, generator=generator) + 1 if with_weight else None
    bias = torch.randn(width, generator=generator) if with_bias else None
    cotangent = torch.randn(shape, generator=generator)
    results = []
    for norm in (reference, fast):
        leaves = [
            t.clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias)
        ]
        args = leaves if norm in (layer_norm_reference, layer_norm_triton) else leaves[:2]
        out = norm(*args)
        out.backward(cotangent)
        results.append([out.detach(), *(t.grad if t is not None else None for t in leaves)])
    for index, (a, b) in enumerate(zip(*results, strict=True)):
        if a is None:
            assert b is None
            continue
        tolerance = FP32 if index < 2 else {"rtol": 1e-4, "atol": 1e-4}
        torch.testing.assert_close(a, b, **tolerance)
