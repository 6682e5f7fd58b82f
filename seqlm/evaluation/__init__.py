"""Evaluation: per-token scores, cheap baselines (uniform, unigram, Kneser-Ney n-grams),
metrics by split / group / kind / position / repeat, and calibration."""

from __future__ import annotations

from seqlm.evaluation.baselines import (
    BaselineEvaluation,
    BaselineOptions,
    FittedBaselines,
    OrderSelection,
    UniformBaseline,
    UnigramBaseline,
    evaluate_baselines,
    fit_baselines,
    select_ngram_order,
    split_sequences,
)
from seqlm.evaluation.calibration import (
    Calibration,
    calibration,
    calibration_of,
    reliability_diagram,
)
from seqlm.evaluation.metrics import (
    POSITION_EDGES,
    TOP_K,
    breakdowns,
    summarize,
    token_kinds,
    token_table,
)
from seqlm.evaluation.ngram import KneserNeyModel, NgramCounts, count_ngrams
from seqlm.evaluation.scores import (
    PredictionTargets,
    Scorer,
    TokenScores,
    prediction_targets,
    token_scores_from_log_probs,
)

__all__ = [
    "POSITION_EDGES",
    "TOP_K",
    "BaselineEvaluation",
    "BaselineOptions",
    "Calibration",
    "FittedBaselines",
    "KneserNeyModel",
    "NgramCounts",
    "OrderSelection",
    "PredictionTargets",
    "Scorer",
    "TokenScores",
    "UniformBaseline",
    "UnigramBaseline",
    "breakdowns",
    "calibration",
    "calibration_of",
    "count_ngrams",
    "evaluate_baselines",
    "fit_baselines",
    "prediction_targets",
    "reliability_diagram",
    "select_ngram_order",
    "split_sequences",
    "summarize",
    "token_kinds",
    "token_scores_from_log_probs",
    "token_table",
]
