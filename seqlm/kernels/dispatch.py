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

# Ops whose Triton kernels have passed `pytest -m cuda tests/kernels` on a real GPU.
# Their kernels are checked on CPU under Triton's interpreter (TRITON_INTERPRET=1) when
# triton is installed, but a kernel that compiles for the interpreter can still fail to
# compile or be slow on hardware: auto selection waits for a GPU run.
TRITON_VERIFIED_ON_GPU: frozenset[str] = frozenset()

# Ops whose FlexAttention path the *model* may take on its own on a GPU: the compiled
# kernel is only checked eagerly on CPU, so the model's attention keeps dense SDPA on
# CUDA until a GPU session has run `pytest -m cuda tests/kernels` and added the op.
FLEX_VERIFIED_ON_GPU: frozenset[str] = frozenset()


@functools.cache
def triton_installed() -> bool:
    """Whether the `triton` package can be imported (looked up once, not imported)."""
    return importlib.util.find_spec("triton") is not None


def triton_usable(device: torch.device) -> bool:
    """Whether a Triton kernel can run on tensors on `device`."""
    return device.type == "cuda" and torch.cuda.is_available() and triton_installed()


def flex_attention_usable(device: torch.device) -> bool:
    """Whether compiled FlexAttention (with its backward) can run on `device`.

    FlexAttention's CPU path has no backward and its eager fallback materialises the
    full T x T scores, so only CUDA counts as usable for training.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def choose_impl(
    op: str,
    requested: str,
    available: Sequence[str],
    device: torch.device,
    auto_order: Sequence[str],
) -> str:
    """Resolve `requested` ("auto" or a name from `available`) for tensors on `device`.

    `auto_order` lists the implementations auto may pick, best first; each is taken
    only if it can run on `device` (and, for Triton, is verified on GPU for `op`).
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
        return requested
    for name in auto_order:
        if name == "triton" and not (triton_usable(device) and op in TRITON_VERIFIED_ON_GPU):
            continue
        if name == "flex" and not flex_attention_usable(device):
            continue
        return name
    raise ConfigError(f"{op}: no implementation can run on {device}")  # pragma: no cover
