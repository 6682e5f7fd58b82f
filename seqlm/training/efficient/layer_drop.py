"""Skipping transformer blocks during training: progressive layer dropping and LayerDrop.

Progressive layer dropping (Zhang & He 2020): a global keep probability

    theta(t) = (1 - theta_bar) * exp(-gamma * t) + theta_bar

falls from 1 towards `theta_bar` over optimizer steps t, and block l of L (1-based)
is kept with probability 1 - (1 - theta(t)) * l / L, so deeper blocks are dropped more
often. A skipped block skips attention and MLP (the residual stream passes through);
a kept block's residual branches are scaled by 1 / p_l, so each branch contributes its
full value in expectation and evaluation (which never drops) sees the same scale.

LayerDrop (Fan et al. 2019) drops every block with one fixed probability, as a
regulariser; kept blocks are not rescaled (the paper evaluates the full model).

Which blocks run is drawn per micro-batch from a generator seeded by (seed, step,
micro-batch), not by rank, so all DDP processes skip the same blocks and a resumed run
draws the same ones. Skipped blocks join the loss with weight 0 (`zero_touch`): every
parameter then gets a gradient, which DDP's reducer waits for, and every parameter has
optimizer state at every checkpoint (a strict resume needs it). One process and N
processes therefore do the same thing: on a step that skips a block, AdamW still moves
that block by its running moments and weight decay, as with zero gradients under DDP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from seqlm.errors import ConfigError
from seqlm.training.callbacks import TrainCallback
from seqlm.training.efficient.block_hooks import selected_blocks
from seqlm.training.efficient.reference_time import find_meter

if TYPE_CHECKING:
    from seqlm.corpus.loader import Batch
    from seqlm.training.trainer import Trainer


def pld_theta(step: float, theta_bar: float, gamma: float) -> float:
    """The global keep probability theta(t) of progressive layer dropping."""
    return (1.0 - theta_bar) * math.exp(-gamma * step) + theta_bar


def pld_keep_probabilities(theta: float, n_layer: int) -> list[float]:
    """Keep probability of each block (index 0 is layer l = 1): 1 - (1 - theta) l / L."""
    return [1.0 - (1.0 - theta) * (layer + 1) / n_layer for layer in range(n_layer)]


def draw_kept_blocks(keep: Sequence[float], generator: torch.Generator) -> list[bool]:
    """One Bernoulli draw per block."""
    draws = torch.rand(len(keep), generator=generator).tolist()
    return [u < p for u, p in zip(draws, keep, strict=True)]


def block_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """A generator that depends on (seed, step, micro-batch) only: the same on every
    process and after a resume."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + step * 1_009 + micro) % (2**63 - 1))
    return generator


def zero_touch(trainer: Trainer, loss: torch.Tensor, skipped: Sequence[int]) -> torch.Tensor:
    """Add 0 x (sum of the skipped blocks' parameters): every parameter gets a (zero)
    gradient, so DDP does not wait for missing ones and the optimizer keeps state for
    all of them."""
    if not skipped:
        return loss
    blocks = trainer.module.blocks
    touch = sum(p.sum() for i in skipped for p in blocks[i].parameters())
    return loss + 0.0 * touch


def forward_with_blocks(
    trainer: Trainer,
    batch: Batch,
    active: Sequence[bool],
    scales: Sequence[float] | None = None,
) -> torch.Tensor:
    """The model's mean loss over the batch with only the `active` blocks run."""
    with selected_blocks(trainer.module, list(active), None if scales is None else list(scales)):
        output = trainer.model(
            batch.idx,
            batch.targets,
            doc_ids=batch.doc_ids,
            position_ids=batch.position_ids,
            **trainer._loss_only,
        )
    skipped = [i for i, keep in enumerate(active) if not keep]
    return zero_touch(trainer, output.loss, skipped)


@dataclass(frozen=True)
class LayerDropOptions:
    """`theta_bar`, `gamma` (per optimizer step): progressive layer dropping; `rate`:
    LayerDrop's fixed drop probability."""

    theta_bar: float = 0.5
    gamma: float = 0.01
    rate: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.theta_bar <= 1.0:
            raise ConfigError(f"theta_bar must be in (0, 1], got {self.theta_bar}")
        if self.gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.rate < 1.0:
            raise ConfigError(f"layer drop rate must be in [0, 1), got {self.rate}")


class _BlockDropping(TrainCallback):
    """Shared loop: per micro-batch, draw kept blocks, run them, charge the cost."""

    def __init__(self, options: LayerDropOptions | None = None) -> None:
        self.options = options or LayerDropOptions()
        self._micro = 0
        self.kept_blocks_sum = 0.0  # for the mean active depth, reported in metrics
        self.micro_batches = 0

    def keep_probabilities(self, step: int, n_layer: int) -> list[float]:
        raise NotImplementedError

    def scales(self, keep: Sequence[float]) -> list[float] | None:
        return None

    def on_step_start(self, trainer: Trainer, batches: Any) -> None:
        self._micro = 0

    def compute_loss(self, trainer: Trainer, batch: Batch) -> torch.Tensor | None:
        n_layer = len(trainer.module.blocks)
        step = trainer.counters.step
        keep = self.keep_probabilities(step, n_layer)
        generator = block_generator(trainer.config.seed, step, self._micro)
        self._micro += 1
        active = draw_kept_blocks(keep, generator)
        depth = sum(active)
        self.kept_blocks_sum += depth
        self.micro_batches += 1
        meter = find_meter(trainer)
        if meter is not None:
            meter.charge("train", depth, batch.n_tokens, covers=batch.n_tokens)
        return forward_with_blocks(trainer, batch, active, self.scales(keep))

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if metrics and self.micro_batches:
            metrics["mean_active_blocks"] = self.kept_blocks_sum / self.micro_batches

    def state_dict(self) -> dict[str, Any]:
        return {"kept_blocks_sum": self.kept_blocks_sum, "micro_batches": self.micro_batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept_blocks_sum = float(state.get("kept_blocks_sum", 0.0))
        self.micro_batches = int(state.get("micro_batches", 0))


class ProgressiveLayerDrop(_BlockDropping):
    """Progressive layer dropping; kept blocks scaled by 1 / p_l."""

    name = "pld"

    def keep_probabilities(self, step: int, n_layer: int) -> list[float]:
        theta = pld_theta(step, self.options.theta_bar, self.options.gamma)
        return pld_keep_probabilities(theta, n_layer)

    def scales(self, keep: Sequence[float]) -> list[float] | None:
        return [1.0 / p for p in keep]


class LayerDrop(_BlockDropping):
    """LayerDrop: each block dropped with probability `rate`, every step."""

    name = "layerdrop"

    def keep_probabilities(self, step: int, n_layer: int) -> list[float]:
        return [1.0 - self.options.rate] * n_layer
