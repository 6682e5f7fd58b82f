"""Paired comparisons of a model with each baseline, with bootstrap confidence intervals.

Every scorer reports the same predicted tokens (`check_same_targets`), so a model and a
baseline can be compared token by token: the difference in mean cross-entropy and in
top-1 accuracy, on exactly the same targets. Whether the difference is real depends on
how much it varies between independent units of data, so the 95% interval comes from a
bootstrap that resamples whole *units*: sequences, or entities where one entity owns
several sequences (tokens of one subject or one bird-day are not independent, and
resampling tokens would give intervals far too narrow).

Each resample draws the units with replacement and recomputes both models' token-weighted
means on the drawn units (the same draw for every baseline), so the interval is of the
difference itself, not of two separate means. The verdict in words follows the interval:
`better` when it lies wholly on the good side of zero, `worse` when wholly on the bad
side, else `not distinguishable`.

Metrics: `cross_entropy` (nats per token, lower is better), `top1` (every target),
`top1_no_eos` (targets other than `[EOS]`: the end of a bout or stay is often easy to
predict and can flatter top-1) and `top10` (every target: what clinical next-event work
reports). A per-target `mask` drops targets from every metric of
every scorer alike (conditioning tokens, which are context only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table

from seqlm.errors import ConfigError
from seqlm.evaluation.scores import TokenScores
from seqlm.vocabularies.scheme import EOS_ID

BETTER, WORSE, UNDECIDED = "better", "worse", "not distinguishable"
# metric -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "cross_entropy": ("cross-entropy (nats)", False),
    "top1": ("top-1", True),
    "top1_no_eos": ("top-1 without EOS", True),
    # what clinical next-event papers report beside top-1 (issue 13's MIMIC target)
    "top10": ("top-10", True),
}
# Resamples drawn per block: a block holds (block x units) counts.
_BLOCK_CELLS = 1 << 22


@dataclass
class ComparisonOptions:
    """How the paired bootstrap is drawn."""

    resamples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of the units (>= 100)."}
    )
    confidence: float = field(
        default=0.95, metadata={"help": "Coverage of the percentile interval, in (0, 1)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap draws."})

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or int(self.resamples) < 100:
            raise ConfigError(f"bootstrap resamples must be at least 100, got {self.resamples}")
        if not 0.0 < float(self.confidence) < 1.0:
            raise ConfigError(f"confidence must lie in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class MetricDifference:
    """One metric of the model and the baseline, their difference (model minus baseline)
    and its bootstrap interval [low, high]."""

    metric: str
    model: float
    baseline: float
    difference: float
    low: float
    high: float
    tokens: int

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]

    @property
    def verdict(self) -> str:
        """`better`, `worse` or `not distinguishable`, for the model."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            # a baseline that gives a target probability 0 is infinitely worse
            if self.difference == (math.inf if self.higher_is_better else -math.inf):
                return BETTER
            if self.difference == (-math.inf if self.higher_is_better else math.inf):
                return WORSE
            return UNDECIDED
        if self.higher_is_better:
            return BETTER if self.low > 0 else WORSE if self.high < 0 else UNDECIDED
        return BETTER if self.high < 0 else WORSE if self.low > 0 else UNDECIDED

    def interval_text(self) -> str:
        """`-0.012 [-0.020, -0.004]` (nats) or `+1.3 [+0.2, +2.4] points` (top-1)."""
        if self.metric == "cross_entropy":
            return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"
        d, lo, hi = (100 * v for v in (self.difference, self.low, self.high))
        return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] pts"


@dataclass(frozen=True)
class PairedComparison:
    """The model against one baseline on the same targets; `verdict` is cross-entropy's."""

    model: str
    baseline: str
    unit: str
    units: int
    confidence: float
    resamples: int
    metrics: dict[str, MetricDifference]

    @property
    def verdict(self) -> str:
        return self.metrics["cross_entropy"].verdict

    def sentence(self) -> str:
        """One line in words, e.g. `model is better than unigram: cross-entropy -0.41
        [-0.44, -0.38] nats, top-1 +12.0 [+10.9, +13.1] pts (95% CI, 212 entities)`."""
        ce, top1 = self.metrics["cross_entropy"], self.metrics["top1"]
        relation = {BETTER: "better than", WORSE: "worse than", UNDECIDED: "not distinguishable"}
        words = (
            f"{self.model} and {self.baseline} are not distinguishable"
            if self.verdict == UNDECIDED
            else f"{self.model} is {relation[self.verdict]} {self.baseline}"
        )
        return (
            f"{words}: cross-entropy {ce.interval_text()} nats, top-1 {top1.interval_text()} "
            f"({100 * self.confidence:g}% CI over {self.units:,} {self.unit}s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "baseline": self.baseline,
            "verdict": self.verdict,
            "resampled_by": self.unit,
            "units": self.units,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "sentence": self.sentence(),
            "metrics": {
                name: {
                    "model": m.model,
                    "baseline": m.baseline,
                    "difference": m.difference,
                    "ci_low": m.low,
                    "ci_high": m.high,
                    "tokens": m.tokens,
                    "higher_is_better": m.higher_is_better,
                    "verdict": m.verdict,
                }
                for name, m in self.metrics.items()
            },
        }


def resampling_units(index: pl.DataFrame) -> tuple[np.ndarray, str]:
    """Per sequence (index row) the unit the bootstrap resamples, and the unit's name:
    the entity when some entity owns several sequences, else the sequence itself."""
    if "entity" in index.columns:
        entities = index["entity"].cast(pl.String).fill_null("").to_numpy()
        if len(set(entities.tolist())) < index.height:
            return entities, "entity"
    return np.arange(index.height), "sequence"


# The columns of `unit_sums`, in order.
UNIT_SUMS = ("targets", "nats", "top1", "targets_no_eos", "top1_no_eos", "top10")


def unit_sums(units: np.ndarray, scores: TokenScores, keep: np.ndarray) -> np.ndarray:
    """Per unit (columns `UNIT_SUMS`): kept targets, log-loss sum, top-1 sum, non-EOS
    targets, their top-1 sum and the top-10 sum; rows are units in `units` order."""
    not_eos = keep & (scores.token != EOS_ID)
    n_units = int(units.max()) + 1 if units.size else 0
    top1 = scores.top_k_hit(1)
    top10 = scores.top_k_hit(10)
    with np.errstate(invalid="ignore"):
        loss = np.where(keep, -scores.log_prob, 0.0)
    columns = [
        np.bincount(units, weights=keep.astype(np.float64), minlength=n_units),
        np.bincount(units, weights=loss, minlength=n_units),
        np.bincount(units, weights=np.where(keep, top1, 0.0), minlength=n_units),
        np.bincount(units, weights=not_eos.astype(np.float64), minlength=n_units),
        np.bincount(units, weights=np.where(not_eos, top1, 0.0), minlength=n_units),
        np.bincount(units, weights=np.where(keep, top10, 0.0), minlength=n_units),
    ]
    return np.stack(columns, axis=1)


def _resample_counts(n_units: int, options: ComparisonOptions) -> list[np.ndarray]:
    """Blocks of (resamples, units) draw counts as floats (for one BLAS product with the
    unit sums), all from one seeded generator. Each resample draws `n_units` units with
    replacement; one bincount over offset indices counts a whole block at once (numpy's
    multinomial was ~40x slower with 100,000 units)."""
    rng = np.random.default_rng(options.seed)
    block = max(1, _BLOCK_CELLS // max(n_units, 1))
    blocks, left = [], int(options.resamples)
    while left > 0:
        size = min(block, left)
        drawn = rng.integers(0, n_units, size=(size, n_units))
        drawn += (np.arange(size) * n_units)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n_units)
        blocks.append(counts.reshape(size, n_units).astype(np.float64))
        left -= size
    return blocks


def _means(sums: np.ndarray) -> np.ndarray:
    """(…, 6) sums -> (…, 4) means: cross-entropy, top-1, top-1 without EOS, top-10."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [
                sums[..., 1] / sums[..., 0],
                sums[..., 2] / sums[..., 0],
                sums[..., 4] / sums[..., 3],
                sums[..., 5] / sums[..., 0],
            ],
            axis=-1,
        )


def compare_with_baselines(
    scores: Mapping[str, TokenScores],
    model: str,
    units: np.ndarray,
    *,
    unit: str = "sequence",
    mask: np.ndarray | None = None,
    options: ComparisonOptions | None = None,
) -> list[PairedComparison]:
    """The model against every other scorer in `scores`, each with the same resamples.

    `units` labels each *sequence* (index row, as `TokenScores.sequence` counts them)
    with its resampling unit (`resampling_units`); `mask` (one bool per target, True =
    scored) drops targets from every metric of every scorer.
    """
    options = options or ComparisonOptions()
    if model not in scores:
        raise ConfigError(f"no scores named {model!r} to compare; have {list(scores)}")
    reference = scores[model]
    keep = np.ones(len(reference), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != (len(reference),):
        raise ConfigError(f"the target mask has {keep.shape[0]} entries for {len(reference)}")
    for name, other in scores.items():
        if len(other) != len(reference) or not np.array_equal(other.token, reference.token):
            raise ConfigError(f"{name} scored other targets than {model}; cannot pair them")
    _, unit_of_sequence = np.unique(np.asarray(units), return_inverse=True)
    target_units = unit_of_sequence.reshape(-1)[reference.sequence]
    sums = {name: unit_sums(target_units, s, keep) for name, s in scores.items()}
    return compare_unit_sums(sums, model, unit=unit, options=options)


def compare_unit_sums(
    sums: Mapping[str, np.ndarray],
    model: str,
    *,
    unit: str = "sequence",
    options: ComparisonOptions | None = None,
) -> list[PairedComparison]:
    """The model against every other scorer from their per-unit sums (`unit_sums`
    columns, one row per unit, the same units in the same order for every scorer)."""
    options = options or ComparisonOptions()
    present = sums[model][:, 0] > 0  # units with no scored target carry no weight
    n_units = int(present.sum())
    if n_units == 0:
        raise ConfigError("no scored targets to compare")
    blocks = _resample_counts(n_units, options)
    model_sums = sums[model][present]
    tail = 100 * (1 - options.confidence) / 2
    comparisons = []
    for name, baseline_sums in sums.items():
        if name == model:
            continue
        baseline_sums = baseline_sums[present]
        drawn = np.concatenate(
            [_means(c @ model_sums) - _means(c @ baseline_sums) for c in blocks], axis=0
        )
        point_model, point_base = _means(model_sums.sum(0)), _means(baseline_sums.sum(0))
        with np.errstate(invalid="ignore"):
            low, high = np.nanpercentile(drawn, [tail, 100 - tail], axis=0)
        counts = (
            (int(model_sums[:, 0].sum()),) * 2
            + (int(model_sums[:, 3].sum()),)
            + (int(model_sums[:, 0].sum()),)
        )
        metrics = {
            metric: MetricDifference(
                metric=metric,
                model=float(point_model[i]),
                baseline=float(point_base[i]),
                difference=float(point_model[i] - point_base[i]),
                low=float(low[i]),
                high=float(high[i]),
                tokens=counts[i],
            )
            for i, metric in enumerate(METRICS)
        }
        comparisons.append(
            PairedComparison(
                model=model,
                baseline=name,
                unit=unit,
                units=n_units,
                confidence=options.confidence,
                resamples=int(options.resamples),
                metrics=metrics,
            )
        )
    return comparisons


def paired_comparison(
    model: TokenScores,
    baseline: TokenScores,
    units: np.ndarray | None = None,
    *,
    unit: str = "sequence",
    mask: np.ndarray | None = None,
    options: ComparisonOptions | None = None,
    names: tuple[str, str] = ("model", "baseline"),
) -> PairedComparison:
    """One model against one baseline (see `compare_with_baselines`); `units` defaults to
    one unit per sequence."""
    if units is None:
        n_sequences = int(model.sequence.max()) + 1 if len(model) else 0
        units = np.arange(n_sequences)
    scores = {names[0]: model, names[1]: baseline}
    return compare_with_baselines(scores, names[0], units, unit=unit, mask=mask, options=options)[0]


def comparisons_frame(comparisons: Sequence[PairedComparison]) -> pl.DataFrame:
    """One row per (baseline, metric): values, difference, interval and verdict."""
    rows = [
        {
            "model": c.model,
            "baseline": c.baseline,
            "metric": m.metric,
            "model_value": m.model,
            "baseline_value": m.baseline,
            "difference": m.difference,
            "ci_low": m.low,
            "ci_high": m.high,
            "verdict": m.verdict,
            "resampled_by": c.unit,
            "units": c.units,
        }
        for c in comparisons
        for m in c.metrics.values()
    ]
    return pl.DataFrame(rows)


def best_baseline(comparisons: Sequence[PairedComparison]) -> PairedComparison | None:
    """The comparison with the strongest baseline: its lowest cross-entropy."""
    finite = [c for c in comparisons if math.isfinite(c.metrics["cross_entropy"].baseline)]
    return min(finite, key=lambda c: c.metrics["cross_entropy"].baseline, default=None)


_VERDICT_STYLE = {BETTER: "green", WORSE: "red", UNDECIDED: "yellow"}


def comparison_table(comparisons: Sequence[PairedComparison], title: str | None = None) -> Table:
    """One row per baseline: the model's difference in each metric with its interval
    (model minus baseline), and the verdict in words."""
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    table.add_column("model vs")
    for metric in METRICS:
        unit = "nats" if metric == "cross_entropy" else "points"
        table.add_column(f"Δ {METRICS[metric][0].split(' (')[0]}\n({unit}, CI)", justify="right")
    table.add_column("model is")
    for c in comparisons:
        cells = [c.metrics[m].interval_text().removesuffix(" pts") for m in METRICS]
        style = _VERDICT_STYLE[c.verdict]
        table.add_row(c.baseline, *cells, f"[{style}]{c.verdict}[/{style}]")
    if comparisons:
        first = comparisons[0]
        table.caption = (
            f"model minus baseline, {100 * first.confidence:g}% bootstrap CI over "
            f"{first.units:,} {first.unit}s ({first.resamples:,} resamples); cross-entropy "
            "decides the verdict: lower is better, top-1 higher is better"
        )
    return table
