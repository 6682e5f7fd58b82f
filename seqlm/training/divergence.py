"""A warning when the tuning loss turns away from the train loss (overfitting).

`DivergenceWatch` is a training callback that `seqlm train` always adds. After each
evaluation it compares the tuning loss with the best one so far: when the tuning loss
has stayed above its best for `patience` evaluations in a row while the train loss kept
falling, the model is learning the train split rather than the data, and every later
reading of it (attention maps, probes) describes an overfitted model. It then prints
one line to stderr, writes a `warning` record to metrics.jsonl, and at the end of
training lists its warnings in RUN/warnings.json (the run's record; the interpretation
commands can read it). It warns once per run; its state is checkpointed, so a resumed
run neither repeats nor loses the warning.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seqlm.training.callbacks import TrainCallback

if TYPE_CHECKING:
    from seqlm.training.trainer import Trainer

WARNINGS_FILE = "warnings.json"


@dataclass
class DivergenceWatch(TrainCallback):
    """Warn when the tuning loss rose for `patience` evaluations while train loss fell."""

    patience: int = field(default=3, metadata={"help": "evaluations above the best tuning loss"})
    min_rise: float = field(
        default=0.01, metadata={"help": "relative rise over the best that counts as rising"}
    )
    name: str = field(default="divergence_watch", metadata={"help": "checkpoint state key"})
    best_loss: float | None = field(default=None, metadata={"help": "best tuning loss"})
    best_train_loss: float | None = field(
        default=None, metadata={"help": "train loss at the best evaluation"}
    )
    above: int = field(default=0, metadata={"help": "evaluations in a row above the best"})
    evaluations: int = field(default=0, metadata={"help": "evaluations seen"})
    warnings: list[dict[str, Any]] = field(
        default_factory=list, metadata={"help": "warnings given so far"}
    )

    def on_evaluate(self, trainer: Trainer, eval_loss: float) -> None:
        self.evaluations += 1
        train_loss = trainer._last_train_loss
        if self.best_loss is None or eval_loss < self.best_loss:
            self.best_loss, self.best_train_loss, self.above = eval_loss, train_loss, 0
            return
        if eval_loss > self.best_loss * (1.0 + self.min_rise):
            self.above += 1
        falling = (
            train_loss is not None
            and self.best_train_loss is not None
            and train_loss < self.best_train_loss
        )
        if self.above >= self.patience and falling and not self.warnings:
            self._warn(trainer, eval_loss, train_loss)

    def _warn(self, trainer: Trainer, eval_loss: float, train_loss: float | None) -> None:
        step = trainer.counters.step
        best_step = trainer.early_stopping.best_step
        message = (
            f"warning: tuning loss has risen for {self.above} evaluations (now "
            f"{eval_loss:.4f}, best {self.best_loss:.4f} at step {best_step}) while train "
            f"loss fell ({self.best_train_loss:.4f} -> {train_loss:.4f}): the model is "
            "overfitting; scoring uses best/ (the best tuning loss). A smaller model, more "
            "dropout or early stopping (train.early_stopping) fits this data better."
        )
        record = {
            "kind": "warning",
            "step": step,
            "warning": "tuning_loss_diverges",
            "eval_loss": eval_loss,
            "best_eval_loss": self.best_loss,
            "best_step": best_step,
            "train_loss": train_loss,
            "train_loss_at_best": self.best_train_loss,
            "message": message,
        }
        self.warnings.append(record)
        if trainer.ctx.is_main:
            print(message, file=sys.stderr, flush=True)
            trainer.metrics.write(record)

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.run is None or not trainer.ctx.is_main:
            return
        stopping = trainer.early_stopping
        record: dict[str, Any] = {
            "warnings": self.warnings,
            "evaluations": self.evaluations,
            "best_step": stopping.best_step,
            "best_eval_loss": stopping.best_loss,
        }
        trainer.run.write_json(WARNINGS_FILE, record)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_train_loss": self.best_train_loss,
            "above": self.above,
            "evaluations": self.evaluations,
            "warnings": self.warnings,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = state.get("best_loss")
        self.best_train_loss = state.get("best_train_loss")
        self.above = int(state.get("above", 0))
        self.evaluations = int(state.get("evaluations", 0))
        self.warnings = list(state.get("warnings", []))
