"""Task metrics as clinical papers report them, with intervals resampled by subject.

AUROC, AUPRC (average precision), Brier score, calibration bins; each figure with its
95% percentile bootstrap interval, drawing subjects with replacement (all of a drawn
subject's labels come along: labels of one subject are not independent). Beside every
figure: the number of labels, subjects and the positive rate. A draw holding one class
only has no AUROC/AUPRC and is skipped; how many were skipped is reported.

Few labels make wide, unstable intervals: `few_labels_warning` says so in words when
there are under 100 labels or under 20 positives (or negatives), and the runner prints
it and writes it beside the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import rankdata

MIN_LABELS = 100
MIN_PER_CLASS = 20


@dataclass
class Estimate:
    value: float | None
    low: float | None
    high: float | None

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass
class TaskMetrics:
    n_labels: int
    n_subjects: int
    n_positive: int
    positive_rate: float
    auroc: Estimate
    auprc: Estimate
    brier: Estimate
    resamples: int
    resamples_used: int
    calibration: list[dict[str, float]] = field(default_factory=list)
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# AUROC and AUPRC in numpy (the bootstrap calls them thousands of times; scikit-learn's
# input checks cost more than the sums). tests/tasks/test_metrics.py holds them equal to
# `roc_auc_score` and `average_precision_score`, ties included.


def _auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Mann-Whitney: the chance a positive outranks a negative, ties counting half."""
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(probs)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auprc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Average precision: sum over distinct thresholds of precision x recall gained."""
    n_pos = int((labels == 1).sum())
    if n_pos == 0 or n_pos == len(labels):
        return None
    order = np.argsort(-probs, kind="stable")
    scores, hits = probs[order], labels[order] == 1
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    true_pos = np.cumsum(hits)[last_of_tie]
    precision = true_pos / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, true_pos]) / n_pos
    return float(np.sum(precision * recall_gain))


def _brier(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((probs - labels) ** 2))


def calibration_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width probability bins: mean predicted, observed rate and count (non-empty)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "mean_predicted": float(probs[inside].mean()),
                    "observed_rate": float(labels[inside].mean()),
                    "count": int(inside.sum()),
                }
            )
    return rows


def few_labels_warning(n_labels: int, n_positive: int) -> str | None:
    """A plain sentence when the labels are too few for stable figures, else None."""
    n_negative = n_labels - n_positive
    if n_labels >= MIN_LABELS and min(n_positive, n_negative) >= MIN_PER_CLASS:
        return None
    return (
        f"few labels: {n_labels} labels, {n_positive} positive, {n_negative} negative; "
        "the intervals are wide and the point estimates unstable (a single label can move "
        "AUROC by a large step): read them as a smoke test, not as a result"
    )


def subject_bootstrap(
    labels: np.ndarray,
    probs: np.ndarray,
    subjects: np.ndarray,
    resamples: int,
    seed: int,
) -> tuple[dict[str, list[float]], int]:
    """Metric values over `resamples` draws of subjects with replacement; draws with
    one class only are left out of AUROC/AUPRC (the count used is returned)."""
    unique, inverse = np.unique(subjects, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(unique))]
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {"auroc": [], "auprc": [], "brier": []}
    for _ in range(resamples):
        drawn = rng.integers(0, len(unique), len(unique))
        rows = np.concatenate([members[k] for k in drawn])
        y, p = labels[rows], probs[rows]
        values["brier"].append(_brier(y, p))
        auroc = _auroc(y, p)
        if auroc is not None:
            values["auroc"].append(auroc)
            values["auprc"].append(_auprc(y, p))  # type: ignore[arg-type]
    return values, len(values["auroc"])


def _estimate(value: float | None, draws: list[float]) -> Estimate:
    if value is None or len(draws) < 2:
        return Estimate(value, None, None)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(low), float(high))


def task_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    subjects: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> TaskMetrics:
    """AUROC, AUPRC, Brier with 95% subject-bootstrap intervals, and calibration bins."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    n_positive = int(labels.sum())
    draws, used = subject_bootstrap(labels, probs, np.asarray(subjects), resamples, seed)
    return TaskMetrics(
        n_labels=len(labels),
        n_subjects=len(np.unique(subjects)),
        n_positive=n_positive,
        positive_rate=n_positive / len(labels) if len(labels) else 0.0,
        auroc=_estimate(_auroc(labels, probs), draws["auroc"]),
        auprc=_estimate(_auprc(labels, probs), draws["auprc"]),
        brier=_estimate(_brier(labels, probs) if len(labels) else None, draws["brier"]),
        resamples=resamples,
        resamples_used=used,
        calibration=calibration_bins(labels, probs),
        warning=few_labels_warning(len(labels), n_positive),
    )
