"""Memory savers for long-context training steps, attached to a GPT from outside.

At T = 8,192 a step's memory (with block-wise attention, which has no T x T tensor)
is the activations autograd keeps for the backward, linear in T. Two savers, both
exact (same loss and gradients as the plain model, to float rounding):

- **lean MLP** (`lean_mlp`): each MLP computes `down(gelu(up(x)))` through
  `seqlm.kernels.gelu_linear`, which keeps `up(x)` and recomputes the GELU in the
  backward, instead of keeping both: one (N, 4C) tensor fewer per block, for one
  extra elementwise pass. Off by default because the default model runs exactly
  the reference loop's ops (tests/model/test_throughput.py).
- **activation checkpointing** (`checkpointed_blocks`): each block's forward runs
  under `torch.utils.checkpoint` (non-reentrant) while gradients are recorded; the
  forward keeps only each block's input and the backward recomputes one block at a
  time (about one more forward of compute; dropout's random state is replayed).
  With a dense document mask the mask's float copy in SDPA (T x T per row) is then
  rebuilt per layer in the backward instead of kept for every layer, so the dense
  path saves more memory and pays its T^2 work twice.

`long_context_memory(model, checkpoint=...)` applies both (checkpointing only when
asked: `True` or "blocks" for whole blocks, "sublayers" for
`seqlm.training.efficient.sublayer_checkpoint`, which keeps each sublayer's input only,
keeps the attention kernel's output instead of recomputing it, and runs the MLP in
token chunks). The model is restored on exit; its state dict never changes (the savers are
instance attributes, not new modules). `use_lean_mlp(model)` attaches the lean MLP for
good: the trainer does so for contexts from `LEAN_MLP_MIN_CONTEXT` on.
docs/long_context.md has the measured costs.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from seqlm.kernels.gelu_linear import gelu_linear
from seqlm.model.gpt import GPT
from seqlm.training.efficient.sublayer_checkpoint import (
    checkpointed_sublayers,
    map_large_allocations,
    small_chunk_loss,
    sublayer_checkpointed_forward,
)

# From this context on the trainer gives a GPT the lean MLP (the length where CPU
# attention turns block-wise and activations dominate a step's memory).
LEAN_MLP_MIN_CONTEXT = 1024
# From this context on `train.memory_checkpoint=auto` checkpoints sublayers on the CPU.
# Below it a step's activations are small and the checkpointing's per-segment, per-head
# and per-chunk work costs more than it saves: measured side by side at 1,024 (one
# thread), the block-wise step without it ran ~20% faster than with it (and as fast as
# the dense-mask step with it); at 2,048 it still beat the dense step (docs/long_context.md).
SUBLAYER_MIN_CONTEXT = 2048


def _checkpointed_forward(block: nn.Module, x: Tensor, *args: object) -> Tensor:
    plain = type(block).forward
    # A KV cache (generation) or no gradients: nothing to save, run as is.
    cache = args[2] if len(args) > 2 else None
    if not torch.is_grad_enabled() or cache is not None:
        return plain(block, x, *args)
    return checkpoint(plain, block, x, *args, use_reentrant=False)


def _lean_mlp_forward(mlp: nn.Module, x: Tensor) -> Tensor:
    y = gelu_linear(mlp.up(x), mlp.down.weight, mlp.down.bias)
    if mlp.dropout and mlp.training:
        y = F.dropout(y, p=mlp.dropout, training=True)
    return y


@contextmanager
def _instance_forwards(modules: list[nn.Module], forward) -> Iterator[None]:
    # Bound methods, not closures: a deepcopy of the model (layer stacking, EMA) then
    # binds the copy's forward to the copy, not to the original module.
    wrapped = [module for module in modules if "forward" not in vars(module)]
    for module in wrapped:
        module.forward = types.MethodType(forward, module)
    try:
        yield
    finally:
        for module in wrapped:
            del module.forward


@contextmanager
def checkpointed_blocks(model: GPT) -> Iterator[GPT]:
    """Within the block, `model`'s blocks recompute their activations in the backward."""
    with _instance_forwards(list(model.blocks), _checkpointed_forward):
        yield model


@contextmanager
def lean_mlp(model: GPT) -> Iterator[GPT]:
    """Within the block, `model`'s MLPs keep one (N, 4C) activation for the backward."""
    with _instance_forwards([block.mlp for block in model.blocks], _lean_mlp_forward):
        yield model


def use_lean_mlp(model: nn.Module) -> bool:
    """Give a GPT's MLPs the lean forward for good; False (nothing done) for other models."""
    if not isinstance(model, GPT):
        return False
    for block in model.blocks:
        if "forward" not in vars(block.mlp):
            block.mlp.forward = types.MethodType(_lean_mlp_forward, block.mlp)
    return True


CHECKPOINT_CHOICES = (False, True, "blocks", "sublayers")
# `TrainConfig.memory_checkpoint` values.
MEMORY_SETTINGS = ("auto", "none", "blocks", "sublayers")


def memory_checkpoint_choice(
    setting: str, context: int, device: torch.device | str, compiled: bool = False
) -> str:
    """The checkpointing a run gets: "none", "blocks" or "sublayers". Auto takes
    sublayers on the CPU from `SUBLAYER_MIN_CONTEXT` on (the fused attention kernel is
    CPU-only; same loss and gradients), none elsewhere or for a compiled model."""
    if setting not in MEMORY_SETTINGS:
        raise ValueError(f"memory_checkpoint must be one of {MEMORY_SETTINGS}, not {setting!r}")
    if setting != "auto":
        return setting
    cpu = torch.device(device).type == "cpu" and not compiled
    return "sublayers" if cpu and context >= SUBLAYER_MIN_CONTEXT else "none"


def use_memory_checkpoint(model: nn.Module, choice: str) -> bool:
    """Give a GPT block ("blocks") or sublayer ("sublayers") checkpointing for good, as
    `long_context_memory` does within its block; False (nothing done) for "none" or
    other models. The state dict never changes (instance forwards only)."""
    if not isinstance(model, GPT) or choice == "none":
        return False
    forward = sublayer_checkpointed_forward if choice == "sublayers" else _checkpointed_forward
    for block in model.blocks:
        if "forward" not in vars(block):
            block.forward = types.MethodType(forward, block)
    if choice == "sublayers":
        map_large_allocations()
        small = small_chunk_loss(model)
        if small is not None:
            model.loss_fn = small
    return True


@contextmanager
def long_context_memory(model: GPT, *, checkpoint: bool | str = False) -> Iterator[GPT]:
    """The lean MLP, and activation checkpointing when `checkpoint` (True or "blocks":
    whole blocks; "sublayers": each sublayer keeps only its input)."""
    if checkpoint not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_CHOICES}, not {checkpoint!r}")
    with ExitStack() as stack:
        stack.enter_context(lean_mlp(model))
        if checkpoint == "sublayers":
            stack.enter_context(checkpointed_sublayers(model))
        elif checkpoint:
            stack.enter_context(checkpointed_blocks(model))
        yield model
