"""Windowed causal attention: SDPA and FlexAttention paths against the dense reference.

Tolerances: fp32 1e-5 for outputs and q/k/v gradients; bf16 (CUDA) 2e-2.
"""

from __future__ import annotations

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.kernels.dispatch import FLEX_MIN_HEAD_DIM
from seqlm.kernels.windowed_attention import (
    windowed_attention,
    windowed_attention_flex,
    windowed_attention_reference,
    windowed_attention_sdpa,
    windowed_block_mask,
    windowed_causal_mask,
)

FP32 = {"rtol": 1e-5, "atol": 1e-5}
BF16 = {"rtol": 2e-2, "atol": 2e-2}
SHAPES = [(2, 2, 16, 8), (5, 3, 123, 24), (1, 4, 257, 32)]
WINDOWS = [None, 1, 7, 64, 1000]


def make_qkv(batch, heads, length, width, *, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, length, width, generator=generator).to(device, dtype)
        for _ in range(3)
    ]


def packed_documents(batch, length, seed=0):
    """Contiguous documents of random lengths, as sequence packing lays them out."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(batch, length, generator=generator) < 0.06
    return starts.cumsum(dim=1)


def output_and_grads(attention, q, k, v, *args):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = attention(*leaves, *args)
    cotangent = torch.linspace(-1, 1, out.numel()).view(out.shape).to(out.device, out.dtype)
    out.backward(cotangent)
    return [out.detach(), *(leaf.grad for leaf in leaves)]


def test_mask_is_window_and_document():
    docs = torch.tensor([[0, 0, 0, 1, 1, 1]])
    mask = windowed_causal_mask(6, 2, docs)[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_window_one_returns_the_values():
    q, k, v = make_qkv(1, 2, 9, 4)
    torch.testing.assert_close(windowed_attention_reference(q, k, v, 1), v)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("with_docs", [False, True])
def test_sdpa_matches_reference(shape, window, with_docs):
    q, k, v = make_qkv(*shape)
    docs = packed_documents(shape[0], shape[2]) if with_docs else None
    expected = output_and_grads(windowed_attention_reference, q, k, v, window, docs)
    got = output_and_grads(windowed_attention_sdpa, q, k, v, window, docs)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **FP32)


@pytest.mark.parametrize("window", [None, 5, 40])
@pytest.mark.parametrize("with_docs", [False, True])
def test_flex_block_mask_logic_matches_reference_on_cpu(window, with_docs):
    """Eager FlexAttention (forward only on CPU) checks the mask_mod and block mask."""
    q, k, v = make_qkv(2, 2, 150, 16, seed=3)
    docs = packed_documents(2, 150, seed=3) if with_docs else None
    expected = windowed_attention_reference(q, k, v, window, docs)
    got = windowed_attention_flex(q, k, v, window, docs, compiled=False)
    torch.testing.assert_close(got, expected, **FP32)


def test_block_masks_are_cached_by_layout():
    docs = packed_documents(2, 64, seed=5)
    first = windowed_block_mask(2, 64, 8, docs, torch.device("cpu"))
    assert windowed_block_mask(2, 64, 8, docs.clone(), torch.device("cpu")) is first
    other_docs = packed_documents(2, 64, seed=6)
    assert windowed_block_mask(2, 64, 8, other_docs, torch.device("cpu")) is not first
    assert windowed_block_mask(2, 64, 9, docs, torch.device("cpu")) is not first


def test_dispatcher_uses_sdpa_on_cpu_and_honours_scale():
    q, k, v = make_qkv(1, 2, 20, 8)
    got = windowed_attention(q, k, v, 4, scale=0.3)
    torch.testing.assert_close(got, windowed_attention_reference(q, k, v, 4, scale=0.3), **FP32)
    with pytest.raises(ConfigError, match="FlexAttention needs a CUDA device"):
        windowed_attention(q, k, v, 4, impl="flex")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q, k, v: windowed_attention(q, k, v, 0), "window must be >= 1"),
        (lambda q, k, v: windowed_attention(q[0], k[0], v[0], 2), r"\(batch, heads"),
        (lambda q, k, v: windowed_attention(q, k[:, :, :5], v, 2), "must match"),
        (
            lambda q, k, v: windowed_attention(q, k, v, 2, torch.zeros(1, 3, dtype=torch.long)),
            "doc_ids must be",
        ),
        (lambda q, k, v: windowed_attention(q, k, v, 2, impl="xformers"), "unknown implementation"),
    ],
)
def test_bad_calls_raise_config_errors(call, message):
    q, k, v = make_qkv(1, 2, 10, 4)
    with pytest.raises(ConfigError, match=message):
        call(q, k, v)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [*SHAPES, (2, 4, 2048, 64)])
@pytest.mark.parametrize("window", [None, 7, 128])
@pytest.mark.parametrize("with_docs", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("impl", ["flex", "sdpa"])
def test_cuda_paths_match_reference(shape, window, with_docs, dtype, impl):
    q, k, v = make_qkv(*shape, dtype=dtype, device="cuda")
    docs = packed_documents(shape[0], shape[2]).cuda() if with_docs else None
    if impl == "flex" and shape[-1] < FLEX_MIN_HEAD_DIM:
        # Inductor cannot compile FlexAttention for heads this narrow (seen on an H200):
        # an explicit request is refused with a clear error, auto takes SDPA.
        with pytest.raises(ConfigError, match="at least 16 wide"):
            windowed_attention(q, k, v, window, docs, impl="flex")
        auto = windowed_attention(q, k, v, window, docs)
        sdpa = windowed_attention(q, k, v, window, docs, impl="sdpa")
        torch.testing.assert_close(auto, sdpa)
        return
    expected = output_and_grads(windowed_attention_reference, q, k, v, window, docs)
    got = output_and_grads(
        lambda *args: windowed_attention(*args, impl=impl), q, k, v, window, docs
    )
    tolerance = BF16 if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-4}
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.float(), b.float(), **tolerance)
