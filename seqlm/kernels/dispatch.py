"""What every kernel's dispatcher asks: which implementations can run here.

Each op module (`linear_cross_entropy`, `norms`, `windowed_attention`,
`attention_stats`) holds a plain-PyTorch reference, its fast paths and a dispatcher
that calls `choose_impl` with the implementations it has. The rules are the same for
every op:

- an explicit `impl` is honoured, or refused with a `ConfigError` when it cannot run on
  the tensors' device (a Triton kernel on CPU, say);
- `"auto"` never picks a Triton kernel on CPU, and picks one on CUDA only when
  `TRITON_VERIFIED_ON_GPU` says the op's CUDA tests have passed on real hardware. Until
  a session with a GPU has run `pytest -m cuda tests/kernels`, auto uses the pure
  PyTorch fast paths (chunked, FlexAttention), which are tested everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence

import torch

from seqlm.errors import ConfigError

# Ops whose Triton kernels have passed `pytest -m cuda tests/kernels` on a real GPU and
# are not slower there than the path auto would take instead. Their kernels are checked
# on CPU under Triton's interpreter (TRITON_INTERPRET=1) when triton is installed, but a
# kernel that compiles for the interpreter can still fail to compile or be slow on
# hardware. Session 16 (H200, torch 2.11, triton 3.6; benchmarks/bench_kernels.py
# --device cuda): the fused cross-entropy passed and took 28.2 ms against the chunked
# path's 37.0 ms at 8192 tokens x 50,000 x 256 with the same memory; the norms passed but
# took 0.7 ms against torch's native 0.5 ms at 8192 x 1024, so they stay out.
TRITON_VERIFIED_ON_GPU: frozenset[str] = frozenset({"linear_cross_entropy"})

# Ops whose FlexAttention path the *model* may take on its own on a GPU. Session 16 ran
# `pytest -m cuda tests/kernels` on an H200 (torch 2.11): windowed attention's compiled
# FlexAttention matched the reference for every head width >= 16 and failed to compile
# below (now refused, see FLEX_MIN_HEAD_DIM), but its speed against dense SDPA was not
# measured (the benchmark's first call compiled for over 40 s), so the model keeps dense
# SDPA on CUDA until a GPU session measures it and adds "windowed_attention".
FLEX_VERIFIED_ON_GPU: frozenset[str] = frozenset()

# Inductor's FlexAttention kernels use tl.dot, which needs a head width of at least 16
# ("NYI: embedding dimension ... must be at least 16", seen on an H200 in session 16).
# Small recipe models (width 32, 4 heads) have narrower heads: they take SDPA instead.
FLEX_MIN_HEAD_DIM = 16


@functools.cache
def triton_installed() -> bool:
    """Whether the `triton` package can be imported (looked up once, not imported)."""
    return importlib.util.find_spec("triton") is not None


def triton_usable(device: torch.device) -> bool:
    """Whether a Triton kernel can run on tensors on `device`."""
    return device.type == "cuda" and torch.cuda.is_available() and triton_installed()


def flex_attention_usable(device: torch.device, head_dim: int | None = None) -> bool:
    """Whether compiled FlexAttention (with its backward) can run on `device` for heads
    `head_dim` wide (None: any width).

    FlexAttention's CPU path has no backward and its eager fallback materialises the
    full T x T scores, so only CUDA counts as usable for training.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    if head_dim is not None and head_dim < FLEX_MIN_HEAD_DIM:
        return False
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def choose_impl(
    op: str,
    requested: str,
    available: Sequence[str],
    device: torch.device,
    auto_order: Sequence[str],
    head_dim: int | None = None,
) -> str:
    """Resolve `requested` ("auto" or a name from `available`) for tensors on `device`.

    `auto_order` lists the implementations auto may pick, best first; each is taken
    only if it can run on `device` (and, for Triton, is verified on GPU for `op`).
    `head_dim`, for attention ops, rules FlexAttention out for heads too narrow for it.
    """
    if requested != "auto" and requested not in available:
        names = ", ".join(["auto", *available])
        raise ConfigError(f"{op}: unknown implementation {requested!r}; choose one of {names}")
    if requested != "auto":
        if requested == "triton" and not triton_usable(device):
            raise ConfigError(
                f"{op}: the Triton kernel needs a CUDA device and the triton package "
                f"(tensors are on {device.type}, triton installed: {triton_installed()})"
            )
        if requested == "flex" and not flex_attention_usable(device):
            raise ConfigError(f"{op}: FlexAttention needs a CUDA device (tensors on {device})")
        if requested == "flex" and not flex_attention_usable(device, head_dim):
            raise ConfigError(
                f"{op}: FlexAttention needs heads at least {FLEX_MIN_HEAD_DIM} wide "
                f"(these are {head_dim}); use impl='sdpa' or 'auto'"
            )
        return requested
    for name in auto_order:
        if name == "triton" and not (triton_usable(device) and op in TRITON_VERIFIED_ON_GPU):
            continue
        if name == "flex" and not flex_attention_usable(device, head_dim):
            continue
        return name
    raise ConfigError(f"{op}: no implementation can run on {device}")  # pragma: no cover
