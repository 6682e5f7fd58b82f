"""The stopping rule a run will use, in words: printed at its start and kept in the run.

A budget given in one unit replaces the library's default of 300 steps rather than
adding to it (`--set train.minutes=14` trains for 14 minutes, not 300 steps), which a
user only learns by watching the run unless it is said up front.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seqlm.errors import Notice
from seqlm.training.config import DEFAULT_STEPS, TrainConfig


@dataclass
class EarlyStopping:
    """Best tuning loss so far and evaluations since it improved (the trainer's)."""

    best_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "evals_since_best": self.evals_since_best,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> EarlyStopping:
        return cls(
            best_loss=state.get("best_loss"),
            best_step=state.get("best_step"),
            evals_since_best=int(state.get("evals_since_best", 0)),
        )


class StoppingRuleNotice(Notice):
    """The stopping rule, announced when training starts (the CLI prints it as a note)."""


def _limits(train: TrainConfig) -> list[str]:
    limits = []
    if train.max_steps is not None:
        limits.append(f"{train.max_steps:,} optimizer steps")
    if train.max_tokens is not None:
        limits.append(f"{train.max_tokens:,} training tokens")
    if train.max_minutes is not None:
        limits.append(f"{train.max_minutes:g} minutes of wall time")
    return limits


def stopping_rule(train: TrainConfig, has_tuning_split: bool = True) -> str:
    """One sentence: what ends the run (the first limit reached, or early stopping)."""
    limits = _limits(train)
    budget = limits[0] if len(limits) == 1 else "the first of " + ", ".join(limits)
    text = f"training stops after {budget}"
    if train.max_steps is None:
        text += f" (a budget in tokens or minutes replaces the default {DEFAULT_STEPS} steps)"
    if not has_tuning_split:
        return text + "; no tuning split, so no evaluation, early stopping or best/"
    if train.early_stopping > 0:
        evaluations = train.early_stopping
        text += (
            f", or earlier after {evaluations} evaluation{'s' * (evaluations != 1)} "
            f"(every {train.eval_every} steps) without a lower tuning loss"
        )
    return text


def announce_stopping_rule(train: TrainConfig, has_tuning_split: bool = True) -> str:
    """Emit the rule as a `StoppingRuleNotice` (library code never prints) and return it."""
    rule = stopping_rule(train, has_tuning_split)
    warnings.warn(rule, StoppingRuleNotice, stacklevel=2)
    return rule
