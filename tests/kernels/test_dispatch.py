"""The kernel dispatcher's rules, on CPU: explicit choices honoured or refused, auto
never picks an unverified Triton kernel, and FlexAttention never for heads narrower
than Inductor can compile (a CUDA device is simulated by patching availability; no
kernel runs)."""

from __future__ import annotations

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.kernels import dispatch
from seqlm.kernels.dispatch import FLEX_MIN_HEAD_DIM, choose_impl

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Make the dispatcher believe a CUDA device and triton are there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)


def test_unknown_implementation_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown implementation 'apex'; choose one of auto"):
        choose_impl("rms_norm", "apex", ("reference", "native"), CPU, ("native",))


def test_gpu_only_paths_are_refused_on_cpu():
    with pytest.raises(ConfigError, match="Triton kernel needs a CUDA device"):
        choose_impl("rms_norm", "triton", ("native", "triton"), CPU, ("triton", "native"))
    with pytest.raises(ConfigError, match="FlexAttention needs a CUDA device"):
        choose_impl("windowed_attention", "flex", ("sdpa", "flex"), CPU, ("flex", "sdpa"))


def test_auto_on_cpu_skips_triton_and_flex():
    order = ("triton", "flex", "chunked")
    assert choose_impl("linear_cross_entropy", "auto", order, CPU, order) == "chunked"


def test_auto_on_cuda_takes_triton_only_where_verified(fake_cuda):
    assert "linear_cross_entropy" in dispatch.TRITON_VERIFIED_ON_GPU
    assert "rms_norm" not in dispatch.TRITON_VERIFIED_ON_GPU
    impls = ("reference", "chunked", "triton")
    assert choose_impl("linear_cross_entropy", "auto", impls, CUDA, ("triton", "chunked")) == (
        "triton"
    )
    norms = ("reference", "native", "triton")
    assert choose_impl("rms_norm", "auto", norms, CUDA, ("triton", "native")) == "native"
    # An explicit request still gets the unverified kernel.
    assert choose_impl("rms_norm", "triton", norms, CUDA, ("triton", "native")) == "triton"


@pytest.mark.parametrize("head_dim", [1, 8, FLEX_MIN_HEAD_DIM - 1])
def test_narrow_heads_never_get_flex(fake_cuda, head_dim):
    impls = ("reference", "sdpa", "flex")
    chosen = choose_impl("windowed_attention", "auto", impls, CUDA, ("flex", "sdpa"), head_dim)
    assert chosen == "sdpa"
    with pytest.raises(ConfigError, match=f"at least 16 wide \\(these are {head_dim}\\)"):
        choose_impl("windowed_attention", "flex", impls, CUDA, ("flex", "sdpa"), head_dim)


@pytest.mark.parametrize("head_dim", [FLEX_MIN_HEAD_DIM, 24, 64, None])
def test_heads_wide_enough_get_flex(fake_cuda, head_dim):
    impls = ("reference", "sdpa", "flex")
    chosen = choose_impl("windowed_attention", "auto", impls, CUDA, ("flex", "sdpa"), head_dim)
    assert chosen == "flex"
    assert dispatch.flex_attention_usable(CUDA, head_dim)
    assert not dispatch.flex_attention_usable(CPU, head_dim)
