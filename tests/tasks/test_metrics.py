"""Task metrics: values against scikit-learn, intervals by subject, the few-labels warning."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from seqlm.tasks.metrics import (
    calibration_bins,
    few_labels_warning,
    subject_bootstrap,
    task_metrics,
)


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1)
    return labels, probs, np.arange(n)


def test_point_estimates_match_scikit_learn() -> None:
    labels, probs, subjects = _data()
    metrics = task_metrics(labels, probs, subjects, resamples=200)
    assert metrics.auroc.value == pytest.approx(roc_auc_score(labels, probs))
    assert metrics.auprc.value == pytest.approx(average_precision_score(labels, probs))
    assert metrics.brier.value == pytest.approx(np.mean((probs - labels) ** 2))
    assert metrics.auroc.low < metrics.auroc.value < metrics.auroc.high
    assert (metrics.n_labels, metrics.n_subjects) == (400, 400)
    assert metrics.positive_rate == pytest.approx(labels.mean())
    assert metrics.warning is None


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_auprc_equal_scikit_learn_with_ties(seed) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    probs = rng.integers(0, 6, 60) / 5  # many ties
    metrics = task_metrics(labels, probs, np.arange(60), resamples=2)
    assert metrics.auroc.value == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert metrics.auprc.value == pytest.approx(average_precision_score(labels, probs), abs=1e-12)


def test_the_bootstrap_draws_whole_subjects() -> None:
    # 10 subjects, 5 labels each: a draw holds a multiple of 5 labels of a subject
    labels = np.repeat([0, 1] * 5, 5)
    probs = np.linspace(0, 1, 50)
    subjects = np.repeat(np.arange(10), 5)
    draws, used = subject_bootstrap(labels, probs, subjects, resamples=50, seed=1)
    assert len(draws["brier"]) == 50 and 0 < used <= 50
    # the interval of labels clustered by subject is wider than if labels were independent
    clustered = task_metrics(labels, probs, subjects, resamples=400)
    independent = task_metrics(labels, probs, np.arange(50), resamples=400)
    width = lambda m: m.auroc.high - m.auroc.low  # noqa: E731
    assert width(clustered) > width(independent)


def test_one_class_has_no_auroc_and_few_labels_warn() -> None:
    metrics = task_metrics(np.zeros(6), np.linspace(0.1, 0.6, 6), np.arange(6), resamples=50)
    assert metrics.auroc.value is None and metrics.auroc.text() == "n/a"
    assert metrics.brier.value is not None
    assert "6 labels, 0 positive" in metrics.warning
    assert few_labels_warning(74, 9).startswith("few labels: 74 labels, 9 positive")
    assert few_labels_warning(1000, 100) is None


def test_calibration_bins_count_every_label() -> None:
    labels, probs, _ = _data(n=300)
    rows = calibration_bins(labels, probs, bins=10)
    assert sum(r["count"] for r in rows) == 300
    for row in rows:
        assert row["low"] <= row["mean_predicted"] <= row["high"]
