"""Planted signals, with a small GPT trained in the test (about a minute each on a loaded
CPU, hence slow): a label decided by a code in the history is found by the probe and the
baseline; a label decided by an outcome after the prediction time, predictable only from
the order of two codes, is found by zero-shot sampling and not by bag-of-codes."""

from __future__ import annotations

import pytest
from helpers.task_data import build_task_corpus, train_task_run, write_task_dataset

from seqlm.tasks import TaskOptions, run_task

pytestmark = pytest.mark.slow


def _planted(tmp_path, kind: str, options: TaskOptions):
    root = write_task_dataset(tmp_path / kind, kind, n_subjects=200)
    build_task_corpus(root)
    train_task_run(root, steps=400)
    return run_task(root / "run", root / "corpus", root / "labels", root / "out", options)


def test_a_code_in_the_history_is_found_by_the_probe_and_the_baseline(tmp_path) -> None:
    options = TaskOptions(methods=("probe", "baseline"), resamples=100)
    result = _planted(tmp_path, "history", options)
    assert result.metrics["probe"].n_labels == 30
    assert result.metrics["probe"].auroc.value >= 0.95
    assert result.metrics["baseline"].auroc.value >= 0.95


def test_an_outcome_after_prediction_time_is_found_by_zero_shot_only(tmp_path) -> None:
    options = TaskOptions(
        methods=("zero-shot", "baseline"),
        outcome_codes=("OUTCOME",),
        horizon_s=86_400.0,
        samples=20,
        max_new_tokens=16,
        resamples=100,
    )
    result = _planted(tmp_path, "future", options)
    assert result.metrics["zero-shot"].auroc.value >= 0.8
    # same codes in either order, lengths drawn alike: bag-of-codes is near chance
    assert abs(result.metrics["baseline"].auroc.value - 0.5) <= 0.2
    assert result.record["methods"]["zero-shot"]["outcome_tokens"] == ["OUTCOME"]
