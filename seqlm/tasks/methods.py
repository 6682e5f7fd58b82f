"""The four ways to predict a task, each a function of the same split histories.

Every method gets the train and tuning rows to fit and choose with, and the report
rows to predict. Report labels are never passed in: only their histories are
(`SplitData.report_labels` exists for scoring, which happens elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from seqlm.progress import Progress
from seqlm.tasks.baseline import BagOfCodes
from seqlm.tasks.finetune import FinetuneSettings, finetune
from seqlm.tasks.history import History
from seqlm.tasks.logistic import fit_logistic
from seqlm.tasks.options import TaskOptions
from seqlm.tasks.representation import hidden_at_prediction
from seqlm.tasks.zero_shot import zero_shot_probabilities
from seqlm.vocabularies.vocabulary import Vocabulary


@dataclass
class SplitData:
    """Histories by role: fit on train, choose on tuning, predict report."""

    train: Sequence[History]
    train_labels: np.ndarray
    tuning: Sequence[History]
    tuning_labels: np.ndarray
    report: Sequence[History]


@dataclass
class MethodOutput:
    probabilities: np.ndarray
    info: dict[str, Any]


def run_baseline(data: SplitData, vocab: Vocabulary, options: TaskOptions) -> MethodOutput:
    features = BagOfCodes(vocab).fit(data.train)
    fitted = fit_logistic(
        (features.transform(data.train), data.train_labels),
        (features.transform(data.tuning), data.tuning_labels),
        options.c_grid,
        options.seed,
    )
    info = {"C": fitted.c, "chosen_by": fitted.chosen_by, "tuning_scores": fitted.tuning}
    info["features"] = len(features.feature_names())
    return MethodOutput(fitted.predict(features.transform(data.report)), info)


def run_probe(data: SplitData, model: nn.Module, options: TaskOptions) -> MethodOutput:
    context = int(model.config.block_size)  # type: ignore[union-attr]

    def states(histories: Sequence[History]) -> np.ndarray:
        return hidden_at_prediction(model, histories, context, options.batch_size)

    fitted = fit_logistic(
        (states(data.train), data.train_labels),
        (states(data.tuning), data.tuning_labels),
        options.c_grid,
        options.seed,
    )
    info = {"C": fitted.c, "chosen_by": fitted.chosen_by, "tuning_scores": fitted.tuning}
    return MethodOutput(fitted.predict(states(data.report)), info)


def run_finetune(
    data: SplitData, model: nn.Module, options: TaskOptions, out: Path | None
) -> MethodOutput:
    settings = FinetuneSettings(
        epochs=options.finetune_epochs,
        lr=options.finetune_lr,
        batch=options.finetune_batch,
        minutes=options.finetune_minutes,
        seed=options.seed,
    )
    result = finetune(
        model,
        (data.train, data.train_labels),
        (data.tuning, data.tuning_labels),
        data.report,
        settings,
        out,
    )
    info = {
        "best_epoch": result.best_epoch,
        "chosen_by": result.chosen_by,
        "tuning_scores": result.tuning,
        "steps": result.steps,
        "seconds": round(result.elapsed_s, 2),
        "stop_reason": result.stop_reason,
    }
    return MethodOutput(result.probabilities, info)


def run_zero_shot(
    data: SplitData,
    model: nn.Module,
    vocab: Vocabulary,
    options: TaskOptions,
    progress: Progress | None = None,
) -> MethodOutput:
    result = zero_shot_probabilities(
        model,
        vocab,
        data.report,
        options.outcome_codes,
        samples=options.samples,
        max_new_tokens=options.max_new_tokens,
        horizon_s=options.horizon_s,
        seed=options.seed,
        progress=progress,
    )
    info = {
        "outcome_codes": list(options.outcome_codes),
        "outcome_tokens": [vocab.tokens[i] for i in result.outcome_ids][:50],
        "samples": options.samples,
        "max_new_tokens": options.max_new_tokens,
        "horizon_s": options.horizon_s,
        "budget_before_horizon": round(result.budget_before_horizon, 4),
        "tokens_generated": result.tokens_generated,
        "notes": result.notes,
    }
    return MethodOutput(result.probabilities, info)
