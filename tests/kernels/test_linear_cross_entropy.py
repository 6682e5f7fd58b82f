"""The chunked (and Triton) linear + cross-entropy against `F.cross_entropy(h @ W.T)`.

Tolerances: fp32 on CPU 1e-5 relative and absolute (the acceptance bound) for the loss
and every gradient; bf16 2e-2 (bf16 keeps 8 bits of mantissa; the paths round at
different points).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.kernels.dispatch import triton_installed
from seqlm.kernels.linear_cross_entropy import (
    LinearCrossEntropyOptions,
    choose_linear_cross_entropy_impl,
    linear_cross_entropy,
    linear_cross_entropy_chunked,
    linear_cross_entropy_reference,
)

FP32 = {"rtol": 1e-5, "atol": 1e-5}
BF16 = {"rtol": 2e-2, "atol": 2e-2}


def make_inputs(batch, tokens, width, vocab, *, dtype=torch.float32, device="cpu", seed=0):
    """Hidden states and an output layer at the scale a trained model has (logits ~ 1)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, tokens, width, generator=generator)
    weight = torch.randn(vocab, width, generator=generator) / math.sqrt(width)
    bias = torch.randn(vocab, generator=generator) * 0.1
    targets = torch.randint(0, vocab, (batch, tokens), generator=generator)
    targets[:, : max(1, tokens // 7)] = -100  # a prompt that does not count
    token_weights = torch.rand(batch, tokens, generator=generator)
    return [
        t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
        for t in (hidden, weight, bias, targets, token_weights)
    ]


def loss_and_grads(loss_fn, hidden, weight, bias, targets, token_weights, reduction, **kwargs):
    """Loss and the gradients of hidden, weight and bias (a fixed cotangent for 'none')."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (hidden, weight, bias)]
    loss = loss_fn(
        leaves[0],
        leaves[1],
        targets,
        bias=leaves[2],
        token_weights=token_weights,
        reduction=reduction,
        **kwargs,
    )
    if reduction == "none":
        cotangent = torch.linspace(-1, 2, loss.numel(), dtype=loss.dtype).view(loss.shape)
        loss.backward(cotangent.to(loss.device))
    else:
        loss.backward()
    return [loss.detach(), *(leaf.grad for leaf in leaves)]


SHAPES = [
    (2, 16, 32, 1000),
    (5, 123, 123, 503),  # odd sizes everywhere
    (1, 37, 64, 50_257),  # GPT-2's vocabulary
]


@pytest.mark.parametrize(("batch", "tokens", "width", "vocab"), SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chunked_matches_reference_fp32(batch, tokens, width, vocab, reduction):
    hidden, weight, bias, targets, _ = make_inputs(batch, tokens, width, vocab)
    expected = loss_and_grads(
        linear_cross_entropy_reference, hidden, weight, bias, targets, None, reduction
    )
    got = loss_and_grads(
        linear_cross_entropy_chunked,
        hidden,
        weight,
        bias,
        targets,
        None,
        reduction,
        chunk_tokens=29,
    )
    for name, a, b in zip(("loss", "hidden", "weight", "bias"), got, expected, strict=True):
        torch.testing.assert_close(a, b, **FP32, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_tokens", [1, 7, 64, 10_000])
def test_token_weights_and_chunk_sizes(reduction, chunk_tokens):
    hidden, weight, bias, targets, token_weights = make_inputs(3, 21, 16, 97, seed=1)
    expected = loss_and_grads(
        linear_cross_entropy_reference, hidden, weight, bias, targets, token_weights, reduction
    )
    got = loss_and_grads(
        linear_cross_entropy_chunked,
        hidden,
        weight,
        bias,
        targets,
        token_weights,
        reduction,
        chunk_tokens=chunk_tokens,
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **FP32)


def test_reference_equals_plain_cross_entropy():
    hidden, weight, _, targets, _ = make_inputs(2, 9, 8, 31, seed=2)
    plain = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(linear_cross_entropy_reference(hidden, weight, targets), plain)


def test_without_bias_matches_plain_cross_entropy():
    """The acceptance check: same loss and gradients as F.cross_entropy(h @ W.T)."""
    hidden, weight, _, targets, _ = make_inputs(4, 50, 24, 777, seed=3)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    plain = F.cross_entropy((h1 @ w1.T).flatten(0, 1), targets.flatten())
    plain.backward()
    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    chunked = linear_cross_entropy_chunked(h2, w2, targets, chunk_tokens=33)
    chunked.backward()
    torch.testing.assert_close(chunked, plain, **FP32)
    torch.testing.assert_close(h2.grad, h1.grad, **FP32)
    torch.testing.assert_close(w2.grad, w1.grad, **FP32)


def test_tied_weight_gets_both_gradients():
    """Output weight = embedding: the shared parameter's gradient sums both uses."""
    vocab, width = 300, 16
    ids = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(4))
    targets = ids.roll(-1, dims=1)
    grads = []
    for loss_fn in (
        linear_cross_entropy_reference,
        lambda h, w, t: linear_cross_entropy_chunked(h, w, t, chunk_tokens=13),
    ):
        torch.manual_seed(0)
        embedding = torch.nn.Embedding(vocab, width)
        hidden = torch.tanh(embedding(ids))
        loss_fn(hidden, embedding.weight, targets).backward()
        grads.append(embedding.weight.grad.clone())
    # both uses contribute: the gradient differs from the output-layer term alone
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], **FP32)


def test_all_ignored_gives_nan_loss_and_zero_gradients_like_torch():
    hidden, weight, bias, targets, _ = make_inputs(1, 5, 8, 11)
    targets = torch.full_like(targets, -100)
    got = loss_and_grads(linear_cross_entropy_chunked, hidden, weight, bias, targets, None, "mean")
    assert torch.isnan(got[0])
    for grad in got[1:]:
        assert torch.count_nonzero(grad) == 0


def test_no_grad_evaluation_returns_the_same_loss():
    hidden, weight, bias, targets, _ = make_inputs(2, 30, 16, 400)
    weight.requires_grad_(True)
    with torch.no_grad():
        loss = linear_cross_entropy_chunked(hidden, weight, targets, bias=bias, chunk_tokens=8)
    assert not loss.requires_grad
    expected = linear_cross_entropy_reference(hidden, weight, targets, bias=bias)
    torch.testing.assert_close(loss, expected.detach(), **FP32)


def test_bf16_inputs_follow_reference():
    hidden, weight, bias, targets, _ = make_inputs(2, 33, 32, 1001, dtype=torch.bfloat16)
    expected = loss_and_grads(
        linear_cross_entropy_reference, hidden, weight, bias, targets, None, "mean"
    )
    got = loss_and_grads(
        linear_cross_entropy_chunked, hidden, weight, bias, targets, None, "mean", chunk_tokens=16
    )
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), **BF16)


@settings(max_examples=30, deadline=None)
@given(
    tokens=st.integers(1, 40),
    width=st.integers(1, 12),
    vocab=st.integers(1, 60),
    chunk_tokens=st.integers(1, 50),
    ignore_fraction=st.floats(0.0, 0.9),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_reference(
    tokens, width, vocab, chunk_tokens, ignore_fraction, reduction, seed
):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, width, generator=generator)
    weight = torch.randn(vocab, width, generator=generator)
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    ignored = torch.rand(tokens, generator=generator) < ignore_fraction
    ignored[0] = False  # at least one token counts, so the mean is defined
    targets[ignored] = -100
    bias = torch.zeros(vocab)
    expected = loss_and_grads(
        linear_cross_entropy_reference, hidden, weight, bias, targets, None, reduction
    )
    got = loss_and_grads(
        linear_cross_entropy_chunked,
        hidden,
        weight,
        bias,
        targets,
        None,
        reduction,
        chunk_tokens=chunk_tokens,
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_dispatcher_picks_by_vocabulary_size_and_never_triton_on_cpu():
    cpu = torch.device("cpu")
    options = LinearCrossEntropyOptions(vocab_threshold=1000)
    assert choose_linear_cross_entropy_impl(999, cpu, options) == "reference"
    assert choose_linear_cross_entropy_impl(1000, cpu, options) == "chunked"
    assert choose_linear_cross_entropy_impl(50_257, cpu, LinearCrossEntropyOptions()) == "chunked"
    forced = LinearCrossEntropyOptions(impl="reference")
    assert choose_linear_cross_entropy_impl(50_257, cpu, forced) == "reference"
    with pytest.raises(ConfigError, match="Triton kernel needs a CUDA device"):
        choose_linear_cross_entropy_impl(50_257, cpu, LinearCrossEntropyOptions(impl="triton"))


def test_auto_goes_chunked_for_many_tokens_of_a_small_vocabulary():
    cpu = torch.device("cpu")
    options = LinearCrossEntropyOptions(logit_limit_elements=10_000)
    assert choose_linear_cross_entropy_impl(100, cpu, options, tokens=99) == "reference"
    assert choose_linear_cross_entropy_impl(100, cpu, options, tokens=100) == "chunked"
    assert choose_linear_cross_entropy_impl(100, cpu, options) == "reference"  # tokens unknown
    # The default limit: a 16,384-token step of a 4k vocabulary is chunked, a short one not.
    assert choose_linear_cross_entropy_impl(4162, cpu, LinearCrossEntropyOptions(), 16_384) == (
        "chunked"
    )
    assert choose_linear_cross_entropy_impl(4162, cpu, LinearCrossEntropyOptions(), 3072) == (
        "reference"
    )
    hidden, weight, bias, targets, _ = make_inputs(2, 40, 16, 60)
    options = LinearCrossEntropyOptions(logit_limit_elements=80 * 60, chunk_tokens=7)
    got = linear_cross_entropy(hidden, weight, targets, bias=bias, options=options)
    expected = linear_cross_entropy_reference(hidden, weight, targets, bias=bias)
    torch.testing.assert_close(got, expected, **FP32)


def test_dispatcher_result_matches_reference_above_threshold():
    hidden, weight, bias, targets, _ = make_inputs(2, 40, 16, 600)
    options = LinearCrossEntropyOptions(vocab_threshold=500, chunk_logit_elements=6000)
    assert options.tokens_per_chunk(600) == 10
    got = linear_cross_entropy(hidden, weight, targets, bias=bias, options=options)
    expected = linear_cross_entropy_reference(hidden, weight, targets, bias=bias)
    torch.testing.assert_close(got, expected, **FP32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"impl": "fused"}, "impl must be one of"),
        ({"vocab_threshold": -1}, "vocab_threshold"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
        ({"chunk_logit_elements": 0}, "chunk_logit_elements"),
        ({"logit_limit_elements": 0}, "logit_limit_elements"),
    ],
)
def test_options_reject_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LinearCrossEntropyOptions(**kwargs)


def test_bad_calls_raise_config_errors():
    hidden, weight, bias, targets, _ = make_inputs(1, 4, 8, 10)
    with pytest.raises(ConfigError, match="do not fit"):
        linear_cross_entropy_chunked(hidden, weight[:, :5], targets)
    with pytest.raises(ConfigError, match="targets"):
        linear_cross_entropy_chunked(hidden, weight, targets[:, :2])
    with pytest.raises(ConfigError, match="reduction"):
        linear_cross_entropy_chunked(hidden, weight, targets, reduction="max")
    with pytest.raises(ConfigError, match="bias"):
        linear_cross_entropy_chunked(hidden, weight, targets, bias=bias[:3])
    with pytest.raises(ConfigError, match="integer ids"):
        linear_cross_entropy_chunked(hidden, weight, targets.float())
    bad = targets.clone()
    bad[0, 3] = 10
    with pytest.raises(ConfigError, match="target id 10 at flat position 3"):
        linear_cross_entropy_chunked(hidden, weight, bad)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize(("batch", "tokens", "width", "vocab"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "impl",
    [
        "chunked",
        pytest.param(
            "triton", marks=pytest.mark.skipif(not triton_installed(), reason="needs triton")
        ),
    ],
)
def test_cuda_paths_match_reference(batch, tokens, width, vocab, dtype, impl):
    hidden, weight, bias, targets, token_weights = make_inputs(
        batch, tokens, width, vocab, dtype=dtype, device="cuda"
    )
    options = LinearCrossEntropyOptions(impl=impl, chunk_tokens=64)
    expected = loss_and_grads(
        linear_cross_entropy_reference, hidden, weight, bias, targets, token_weights, "mean"
    )
    got = loss_and_grads(
        linear_cross_entropy,
        hidden,
        weight,
        bias,
        targets,
        token_weights,
        "mean",
        options=options,
    )
    tolerance = FP32 if dtype == torch.float32 else BF16
    if dtype == torch.float32:
        tolerance = {"rtol": 1e-4, "atol": 1e-4}  # TF32 may be on for the matmuls
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.float(), b.float(), **tolerance)


@pytest.mark.slow  # two subprocesses, ~1.5 GB for the reference; a minute on 2 cores
def test_benchmark_shows_chunked_peak_memory_under_a_quarter(tmp_path):
    """The acceptance figure, measured the way the benchmark measures it (RSS)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"
    rows_file = tmp_path / "rows.json"
    command = [
        sys.executable,
        str(script),
        "--ops",
        "linear_cross_entropy",
        "--set",
        "tokens=4096",
        "--set",
        "vocab=32000",
        "--set",
        "width=64",
        "--repeats",
        "1",
        "--json",
        str(rows_file),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=900)
    rows = {row["impl"]: row for row in json.loads(rows_file.read_text())}
    assert rows["reference"]["peak_mb"] > 500  # the 4096 x 32000 fp32 logits alone
    assert rows["chunked"]["peak_mb"] <= 0.25 * rows["reference"]["peak_mb"]
