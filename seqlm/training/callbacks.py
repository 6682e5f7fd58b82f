"""Hooks into the training loop, for behaviour that changes per step.

Efficient-training methods (progressive layer dropping, layer stacking, selective
backprop ...) are callbacks rather than edits to the loop. A callback that keeps state
returns it from `state_dict()` (JSON-safe values) so that checkpoints and exact resume
cover it; the loop stores it in `state.json` under the callback's `name`.

The trainer calls, in order, for every step:
`on_step_start` -> (`compute_loss` for each micro-batch) -> optimizer step ->
`on_step_end`; then `on_evaluate` after each evaluation, and `on_train_end` once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from seqlm.corpus.loader import Batch, StepBatches

# The trainer calling these hooks (seqlm.training.trainer.Trainer), typed loosely: the
# trainer imports this module, and a type-only import back would close an import cycle.
TrainerRef = Any


class TrainCallback:
    """Base class: every hook does nothing. Override the ones you need."""

    name: str = "callback"

    def on_train_start(self, trainer: TrainerRef) -> None:
        """After the model, optimizer and any resumed state are in place."""

    def on_step_start(self, trainer: TrainerRef, batches: StepBatches) -> None:
        """Before the step's forward passes; the learning rate is already set."""

    def compute_loss(self, trainer: TrainerRef, batch: Batch) -> torch.Tensor | None:
        """Return a replacement training loss for one micro-batch, or None for the
        default. It must be the mean over the micro-batch's `n_targets` targets (the
        trainer rescales it so that accumulation and processes weigh tokens equally)."""
        return None

    def on_step_end(self, trainer: TrainerRef, metrics: dict[str, float]) -> None:
        """After the optimizer step and the counters' advance. `metrics` is filled only
        on logging steps (reading the loss forces a device sync)."""

    def on_evaluate(self, trainer: TrainerRef, eval_loss: float) -> None:
        """After an evaluation on the tuning split."""

    def on_train_end(self, trainer: TrainerRef) -> None:
        """After the last step, evaluation and checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class CallbackList:
    """Calls each callback's hook in order."""

    def __init__(self, callbacks: Sequence[TrainCallback] = ()) -> None:
        self.callbacks = list(callbacks)
        names = [c.name for c in self.callbacks]
        if len(set(names)) != len(names):
            raise ValueError(f"callback names must be unique, got {names}")

    def on_train_start(self, trainer: TrainerRef) -> None:
        for callback in self.callbacks:
            callback.on_train_start(trainer)

    def on_step_start(self, trainer: TrainerRef, batches: StepBatches) -> None:
        for callback in self.callbacks:
            callback.on_step_start(trainer, batches)

    def compute_loss(self, trainer: TrainerRef, batch: Batch) -> torch.Tensor | None:
        for callback in self.callbacks:
            loss = callback.compute_loss(trainer, batch)
            if loss is not None:
                return loss
        return None

    def on_step_end(self, trainer: TrainerRef, metrics: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_step_end(trainer, metrics)

    def on_evaluate(self, trainer: TrainerRef, eval_loss: float) -> None:
        for callback in self.callbacks:
            callback.on_evaluate(trainer, eval_loss)

    def on_train_end(self, trainer: TrainerRef) -> None:
        for callback in self.callbacks:
            callback.on_train_end(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c in self.callbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for callback in self.callbacks:
            if callback.name in state:
                callback.load_state_dict(state[callback.name])
