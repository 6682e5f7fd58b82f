"""Selective backprop (Jiang et al. 2019): backpropagate the sequences that are hard now.

Every row of a micro-batch gets a forward pass without gradients; its mean loss is
ranked against a window of recent row losses, and the row is kept for the backward
pass with probability percentile ** beta (percentile in [0, 1]; beta = 1 keeps about
half the rows, larger beta fewer). Kept rows then run forward and backward. Both passes
count against the budget: the forward-only pass over every row is charged as a
forward, the kept rows as a training pass.

The step's loss is the mean over the kept rows' targets, and the trainer weighs the
micro-batch by its original target count, so a step's learning rate is comparable
with the baseline's. Draws come from a generator seeded by (seed, step, micro-batch,
rank); the window of recent losses is part of the checkpointed state.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from seqlm.constants import IGNORE_INDEX
from seqlm.errors import ConfigError
from seqlm.training.callbacks import TrainCallback
from seqlm.training.efficient.reference_time import find_meter
from seqlm.vocabularies import PAD_ID

if TYPE_CHECKING:
    from seqlm.corpus.loader import Batch
    from seqlm.training.trainer import Trainer


@dataclass(frozen=True)
class SelectiveBackpropOptions:
    """`beta`: the percentile's power; `history`: how many recent row losses rank a row."""

    beta: float = 1.0
    history: int = 1024

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"selective backprop beta must be > 0, got {self.beta}")
        if self.history < 1:
            raise ConfigError(f"selective backprop history must be >= 1, got {self.history}")


def loss_percentile(loss: float, recent: list[float]) -> float:
    """Fraction of `recent` (sorted) losses at or below `loss`; 1 when there are none."""
    if not recent:
        return 1.0
    return bisect.bisect_right(recent, loss) / len(recent)


def keep_probability(percentile: float, beta: float) -> float:
    return percentile**beta


def expected_kept_fraction(beta: float) -> float:
    """For losses from a continuous distribution the percentile is uniform on [0, 1], so
    the expected kept fraction is the integral of u ** beta: 1 / (beta + 1)."""
    return 1.0 / (beta + 1.0)


class RecentLosses:
    """A sliding window of row losses with a sorted view for percentiles."""

    def __init__(self, size: int) -> None:
        self.window: deque[float] = deque(maxlen=size)
        self.sorted: list[float] = []

    def add(self, loss: float) -> None:
        if len(self.window) == self.window.maxlen:
            oldest = self.window[0]
            del self.sorted[bisect.bisect_left(self.sorted, oldest)]
        self.window.append(loss)
        bisect.insort(self.sorted, loss)

    def values(self) -> list[float]:
        return list(self.window)


def row_losses(trainer: Trainer, batch: Batch) -> torch.Tensor:
    """Mean loss per row (rows without targets get 0), without gradients."""
    with torch.no_grad():
        output = trainer.module(
            batch.idx,
            batch.targets,
            doc_ids=batch.doc_ids,
            position_ids=batch.position_ids,
        )
        logits = output.logits.float()
        mask = batch.targets != IGNORE_INDEX
        safe = batch.targets.clamp_min(0)
        token_loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), safe, reduction="none"
        )
        token_loss = token_loss * mask
        counts = mask.sum(dim=1)
        return token_loss.sum(dim=1) / counts.clamp_min(1)


class SelectiveBackprop(TrainCallback):
    """Keeps a row for backprop with probability (its loss percentile) ** beta."""

    name = "selective_backprop"

    def __init__(self, options: SelectiveBackpropOptions | None = None) -> None:
        self.options = options or SelectiveBackpropOptions()
        self.recent = RecentLosses(self.options.history)
        self.rows_seen = 0
        self.rows_kept = 0
        self._micro = 0

    def on_step_start(self, trainer: Trainer, batches: Any) -> None:
        self._micro = 0

    def select(self, losses: list[float], generator: torch.Generator) -> list[bool]:
        """Decide each row against the window as it was before this batch, then add the
        batch's losses to the window."""
        ranked = self.recent.sorted
        draws = torch.rand(len(losses), generator=generator).tolist()
        keep = [
            u < keep_probability(loss_percentile(loss, ranked), self.options.beta)
            for u, loss in zip(draws, losses, strict=True)
        ]
        for loss in losses:
            self.recent.add(loss)
        return keep

    def compute_loss(self, trainer: Trainer, batch: Batch) -> torch.Tensor | None:
        n_layer = len(trainer.module.blocks)
        meter = find_meter(trainer)
        if meter is not None:
            meter.charge("forward", n_layer, batch.n_tokens, covers=batch.n_tokens)
        has_targets = (batch.targets != IGNORE_INDEX).any(dim=1)
        losses = row_losses(trainer, batch)
        candidates = [i for i in range(len(losses)) if bool(has_targets[i])]
        generator = torch.Generator()
        seed = trainer.config.seed * 1_000_003 + trainer.counters.step * 1_009 + self._micro
        generator.manual_seed((seed * 31 + trainer.ctx.rank) % (2**63 - 1))
        self._micro += 1
        keep = self.select([float(losses[i]) for i in candidates], generator)
        kept_rows = [i for i, k in zip(candidates, keep, strict=True) if k]
        self.rows_seen += len(candidates)
        self.rows_kept += len(kept_rows)
        weight = 1.0
        if not kept_rows:
            # Nothing to learn from here, but under DDP every process must run the
            # wrapped forward and backward each step: one row with weight 0.
            kept_rows, weight = [candidates[0] if candidates else 0], 0.0
        rows = torch.tensor(kept_rows, device=batch.idx.device)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, rows)

        kept_tokens = int((pick(batch.idx) != PAD_ID).sum())
        if meter is not None:
            meter.charge("train", n_layer, kept_tokens)
        output = trainer.model(
            pick(batch.idx),
            pick(batch.targets),
            doc_ids=pick(batch.doc_ids),
            position_ids=pick(batch.position_ids),
            **trainer._loss_only,
        )
        return output.loss * weight if weight != 1.0 else output.loss

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if metrics and self.rows_seen:
            metrics["kept_fraction"] = self.rows_kept / self.rows_seen

    def state_dict(self) -> dict[str, Any]:
        return {
            "recent": self.recent.values(),
            "rows_seen": self.rows_seen,
            "rows_kept": self.rows_kept,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = RecentLosses(self.options.history)
        for loss in state.get("recent", []):
            self.recent.add(float(loss))
        self.rows_seen = int(state.get("rows_seen", 0))
        self.rows_kept = int(state.get("rows_kept", 0))
