"""Logistic regression fitted on train labels with its regularisation chosen on tuning.

Shared by the probe (hidden states) and the baseline (bag-of-codes counts). Features
are standardised with the train rows' mean and spread only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seqlm.errors import ConfigError


@dataclass
class FittedLogistic:
    """The chosen model, its C, how it was chosen, and the tuning score of every C."""

    model: object
    c: float
    chosen_by: str
    tuning: dict[str, float] = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(features)[:, 1]  # type: ignore[attr-defined]


def _fit(features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> object:
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, max_iter=2000, random_state=seed),
    )
    model.fit(features, labels)
    return model


def _tuning_score(probabilities: np.ndarray, labels: np.ndarray, by: str) -> float:
    if by == "tuning AUROC":
        return float(roc_auc_score(labels, probabilities))
    return -float(log_loss(labels, probabilities, labels=[0, 1]))


def fit_logistic(
    train: tuple[np.ndarray, np.ndarray],
    tuning: tuple[np.ndarray, np.ndarray],
    c_grid: tuple[float, ...],
    seed: int = 0,
) -> FittedLogistic:
    """Fit one model per C on `train`, keep the best on `tuning` (AUROC when tuning
    holds both classes, else log loss; C = 1 when there are no tuning labels)."""
    features, labels = train
    if len(np.unique(labels)) < 2:
        raise ConfigError(
            f"the train labels hold one class only ({len(labels)} labels): nothing to fit"
        )
    tune_features, tune_labels = tuning
    if len(tune_labels) == 0:
        return FittedLogistic(_fit(features, labels, 1.0, seed), 1.0, "no tuning labels: C = 1")
    by = "tuning AUROC" if len(np.unique(tune_labels)) == 2 else "tuning log loss"
    best: tuple[float, float, object] | None = None
    scores: dict[str, float] = {}
    for c in c_grid:
        model = _fit(features, labels, c, seed)
        score = _tuning_score(model.predict_proba(tune_features)[:, 1], tune_labels, by)  # type: ignore[attr-defined]
        scores[f"{c:g}"] = score
        if best is None or score > best[0]:  # ties keep the smaller C (stronger penalty)
            best = (score, c, model)
    assert best is not None
    return FittedLogistic(best[2], best[1], by, scores)
