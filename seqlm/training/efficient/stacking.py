"""Layer stacking (Gong et al. 2019): train shallow, then double the depth by copying.

The model is built at its full depth L and trained with only its first `depth` blocks
active; at each growth point (a fraction of the budget) blocks 0..d-1 are copied into
blocks d..2d-1 and activated. Keeping the full-depth module (rather than rebuilding it
with `block_hooks.stack_blocks`) means checkpoints always hold every block, so a resumed run
loads the same tensors, DDP wrappers and the optimizer's parameter list never change,
and the callback state (`depth`) is all resume needs.

Optimizer state at growth: "reset" clears every parameter's Adam moments (a fresh
optimizer, as after rebuilding), "copy" gives each new block its source block's
moments. `function_preserving=True` zeroes the new blocks' output projections
(attention `proj` and MLP `down`), so with Pre-LN blocks each new block starts as the
identity and the model's outputs are identical just before and after growth.
Blocks not yet grown also start with zero output projections, so evaluation (which runs
every block) scores the shallow model being trained. Post-LN models are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from seqlm.errors import ConfigError
from seqlm.training.callbacks import TrainCallback
from seqlm.training.efficient.layer_drop import forward_with_blocks
from seqlm.training.efficient.reference_time import find_meter

if TYPE_CHECKING:
    from torch import nn

    from seqlm.corpus.loader import Batch, StepBatches
    from seqlm.training.trainer import Trainer


@dataclass(frozen=True)
class StackingOptions:
    """Start with `start_depth` blocks; double at each of `grow_at` (budget fractions)."""

    start_depth: int = 1
    grow_at: tuple[float, ...] = (0.25, 0.5)
    optimizer_state: Literal["reset", "copy"] = "copy"
    function_preserving: bool = True

    def __post_init__(self) -> None:
        if self.start_depth < 1:
            raise ConfigError(f"start_depth must be >= 1, got {self.start_depth}")
        fractions = list(self.grow_at)
        if any(not 0.0 < f < 1.0 for f in fractions) or fractions != sorted(fractions):
            raise ConfigError(f"grow_at must be increasing fractions in (0, 1), got {fractions}")
        if self.optimizer_state not in ("reset", "copy"):
            raise ConfigError(
                f"optimizer_state must be 'reset' or 'copy', got {self.optimizer_state!r}"
            )

    def final_depth(self) -> int:
        return self.start_depth * 2 ** len(self.grow_at)


def grow_blocks(
    blocks: nn.ModuleList,
    depth: int,
    *,
    function_preserving: bool,
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_state: Literal["reset", "copy"] = "copy",
) -> int:
    """Copy blocks 0..depth-1 into depth..2*depth-1 in place; returns the new depth."""
    new_depth = 2 * depth
    if new_depth > len(blocks):
        raise ConfigError(f"cannot grow {depth} blocks to {new_depth}: the model has {len(blocks)}")
    with torch.no_grad():
        for source in range(depth):
            target = blocks[depth + source]
            for dst, src in zip(target.parameters(), blocks[source].parameters(), strict=True):
                dst.copy_(src)
                if optimizer is not None and optimizer_state == "copy":
                    _copy_moments(optimizer, src, dst)
            if function_preserving:
                _zero_outputs(target)
    if optimizer is not None and optimizer_state == "reset":
        optimizer.state.clear()
    return new_depth


def _zero_outputs(block: nn.Module) -> None:
    """Zero a block's residual-branch output projections: a Pre/Peri-LN block is then
    the identity."""
    for layer in (block.attn.proj, block.mlp.down):
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


def _copy_moments(optimizer: torch.optim.Optimizer, src: torch.Tensor, dst: torch.Tensor) -> None:
    state = optimizer.state.get(src)
    if not state:
        optimizer.state.pop(dst, None)
        return
    optimizer.state[dst] = {
        key: value.clone() if isinstance(value, torch.Tensor) else value
        for key, value in state.items()
    }


class LayerStacking(TrainCallback):
    """Trains the first `depth` blocks; doubles `depth` when budget progress passes
    each `grow_at` fraction (checked before every step)."""

    name = "stacking"

    def __init__(self, options: StackingOptions | None = None) -> None:
        self.options = options or StackingOptions()
        self.depth = self.options.start_depth
        self.growths = 0
        self.history: list[tuple[int, int]] = []  # (step, new depth)

    def on_train_start(self, trainer: Trainer) -> None:
        n_layer = len(trainer.module.blocks)
        if self.options.final_depth() != n_layer:
            raise ConfigError(
                f"stacking from {self.options.start_depth} blocks with "
                f"{len(self.options.grow_at)} doublings ends at {self.options.final_depth()} "
                f"blocks, but the model has {n_layer}"
            )
        if trainer.average.enabled:
            raise ConfigError(
                "layer stacking cannot run with weight averaging (train.ema_decay): at a "
                "growth the copied blocks' average would keep their old weights, so the "
                "averaged model would not be the grown one; set train.ema_decay=0"
            )
        blocks = trainer.module.blocks
        if any(block.placement == "post" for block in blocks):
            raise ConfigError(
                "layer stacking needs pre- or peri-LN blocks (post-LN has none "
                "that start as the identity)"
            )
        # Blocks not yet grown are the identity (zero output projections), so evaluation,
        # which runs every block, sees exactly the shallow model being trained.
        with torch.no_grad():
            for block in blocks[self.depth :]:
                _zero_outputs(block)

    def on_step_start(self, trainer: Trainer, batches: StepBatches) -> None:
        progress = trainer.budget.progress(trainer.counters)
        while (
            self.growths < len(self.options.grow_at)
            and progress >= self.options.grow_at[self.growths]
        ):
            self.depth = grow_blocks(
                trainer.module.blocks,
                self.depth,
                function_preserving=self.options.function_preserving,
                optimizer=trainer.optimizer,
                optimizer_state=self.options.optimizer_state,
            )
            self.growths += 1
            self.history.append((trainer.counters.step, self.depth))

    def active(self, n_layer: int) -> Sequence[bool]:
        return [i < self.depth for i in range(n_layer)]

    def compute_loss(self, trainer: Trainer, batch: Batch) -> torch.Tensor | None:
        meter = find_meter(trainer)
        if meter is not None:
            meter.charge("train", self.depth, batch.n_tokens, covers=batch.n_tokens)
        return forward_with_blocks(trainer, batch, self.active(len(trainer.module.blocks)))

    def state_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "growths": self.growths, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.depth = int(state.get("depth", self.options.start_depth))
        self.growths = int(state.get("growths", 0))
        self.history = [(int(s), int(d)) for s, d in state.get("history", [])]
