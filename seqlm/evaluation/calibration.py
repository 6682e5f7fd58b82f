"""Calibration of next-token predictions: expected calibration error and a reliability
diagram over the top-1 confidence.

Tokens are put in equal-width bins of their top-1 confidence (the probability of the
most likely id); a calibrated model's accuracy in each bin matches its mean confidence.
ECE = sum over bins of (tokens in bin / all tokens) * |accuracy - confidence|. Accuracy
is the expected top-1 hit with ties broken at random (see `TokenScores.top_k_hit`).

`fit_temperature` is temperature scaling (Guo et al. 2017): one scalar T that divides the
logits, chosen to minimise the mean negative log-likelihood of held-aside targets (the
tuning split, never the scored one). The NLL is convex in 1/T, so a golden-section search
over 1/T finds the minimum; T = 1 leaves the model unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.errors import ConfigError
from seqlm.evaluation.scores import TokenScores
from seqlm.plotting import new_figure, plain_text

DEFAULT_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)  # the search's bounds on T
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class Calibration:
    """`bins`: one row per bin (`bin`, `lower`, `upper`, `tokens`, `confidence`,
    `accuracy`; confidence and accuracy null where a bin is empty). `max_gap` is the
    largest |accuracy - confidence| over non-empty bins (MCE)."""

    ece: float
    max_gap: float
    tokens: int
    bins: pl.DataFrame


def calibration(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS
) -> Calibration:
    """ECE with `n_bins` equal-width bins over [0, 1]; a confidence of exactly 1 falls in
    the last bin. `correct` may be 0/1 or a fractional expected hit."""
    if n_bins < 1:
        raise ConfigError(f"calibration needs at least one bin, got {n_bins}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ConfigError("confidence and correctness must be 1-d arrays of the same length")
    if np.isnan(confidence).any() or np.isnan(correct).any():
        raise ConfigError("confidence and correctness must not hold NaN")
    if confidence.size and (np.min(confidence) < 0 or np.max(confidence) > 1):
        raise ConfigError("confidences must lie in [0, 1]")
    which = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    tokens = np.bincount(which, minlength=n_bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(which, weights=correct, minlength=n_bins)
    filled = tokens > 0
    mean_confidence = np.divide(confidence_sum, tokens, out=np.zeros(n_bins), where=filled)
    accuracy = np.divide(correct_sum, tokens, out=np.zeros(n_bins), where=filled)
    gap = np.abs(accuracy - mean_confidence)
    total = int(tokens.sum())
    ece = float(np.sum(tokens * gap) / total) if total else float("nan")
    bins = pl.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": np.arange(n_bins) / n_bins,
            "upper": np.arange(1, n_bins + 1) / n_bins,
            "tokens": tokens,
            "confidence": np.where(filled, mean_confidence, np.nan),
            "accuracy": np.where(filled, accuracy, np.nan),
        }
    ).with_columns(pl.col("confidence", "accuracy").fill_nan(None))
    max_gap = float(gap[filled].max()) if filled.any() else float("nan")
    return Calibration(ece=ece, max_gap=max_gap, tokens=total, bins=bins)


def calibration_of(scores: TokenScores, n_bins: int = DEFAULT_BINS) -> Calibration:
    """Calibration of a scorer's top-1 predictions."""
    return calibration(scores.max_prob, scores.top_k_hit(1), n_bins)


@plain_text
def reliability_diagram(
    calibrations: Calibration | Mapping[str, Calibration],
    path: str | Path,
    title: str = "Reliability of top-1 predictions",
    dpi: int = 150,
) -> Path:
    """Write a reliability diagram PNG: accuracy against confidence per bin (one line per
    model), the diagonal of perfect calibration, and below it the share of tokens per
    bin. Returns the path written."""
    named = {"model": calibrations} if isinstance(calibrations, Calibration) else calibrations
    if not named:
        raise ConfigError("reliability_diagram needs at least one calibration")
    figure = new_figure(figsize=(6.4, 7.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration")
    for name, result in named.items():
        bins = result.bins.filter(pl.col("tokens") > 0)
        label = f"{name} (ECE {result.ece:.3f})"
        line = top.plot(bins["confidence"], bins["accuracy"], marker="o", label=label)[0]
        centres = (result.bins["lower"] + result.bins["upper"]) / 2
        share = result.bins["tokens"] / max(result.tokens, 1)
        bottom.plot(centres, share, marker=".", color=line.get_color())
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy (top-1)", title=title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    bottom.set(xlabel="confidence (probability of the top-1 token)", ylabel="share of tokens")
    bottom.grid(alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi)
    return out


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted T and the mean NLL (nats per target) at T = 1 and at T on `tokens`
    targets."""

    temperature: float
    tokens: int
    nll_before: float
    nll_after: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def mean_nll(logits: np.ndarray, true_ids: np.ndarray, inverse_temperature: float) -> float:
    """Mean -log softmax(logits / T)[true id] with 1/T = `inverse_temperature`."""
    scaled = np.asarray(logits, dtype=np.float64) * inverse_temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    true = scaled[np.arange(scaled.shape[0]), np.asarray(true_ids, dtype=np.int64)]
    return float(np.mean(log_norm - true))


def fit_temperature(
    logits: np.ndarray, true_ids: np.ndarray, *, tolerance: float = 1e-6
) -> TemperatureFit:
    """The T in `TEMPERATURE_RANGE` minimising the mean NLL of `true_ids` under
    softmax(logits / T) (rows of `logits` are targets, columns ids)."""
    logits = np.asarray(logits)
    true_ids = np.asarray(true_ids, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] != true_ids.shape[0]:
        raise ConfigError("fit_temperature needs one row of logits per target id")
    if logits.shape[0] == 0:
        raise ConfigError("fit_temperature needs at least one target")
    if not np.isfinite(logits).all():
        raise ConfigError("fit_temperature needs finite logits")
    low, high = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]
    a, b = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    fa, fb = mean_nll(logits, true_ids, a), mean_nll(logits, true_ids, b)
    while high - low > tolerance * max(1.0, a):
        if fa < fb:  # the minimum lies in [low, b]
            high, b, fb = b, a, fa
            a = high - _GOLDEN * (high - low)
            fa = mean_nll(logits, true_ids, a)
        else:
            low, a, fa = a, b, fb
            b = low + _GOLDEN * (high - low)
            fb = mean_nll(logits, true_ids, b)
    best = (low + high) / 2.0
    before, after = mean_nll(logits, true_ids, 1.0), mean_nll(logits, true_ids, best)
    if before <= after:  # T = 1 is as good (the flat or bounded case): leave the model be
        best, after = 1.0, before
    return TemperatureFit(
        temperature=float(1.0 / best), tokens=int(true_ids.size), nll_before=before, nll_after=after
    )
