"""Whether a run's model has earned an interpretation: the gate before attention analysis.

Attention maps, span experiments, head importance and probes describe *a* model; they
say something about the data only when that model predicts the data better than the
simple baselines do. `interpretation_check(run, corpus)` returns the reasons to distrust
it (none when it has earned its place):

- it does not beat the best baseline on held-out data: the paired bootstrap interval of
  its cross-entropy minus the strongest baseline's (lowest cross-entropy among uniform,
  unigram, best n-gram, per-group n-grams and the LSTM when evaluated) does not lie
  wholly below zero;
- it stopped at its first evaluation: the lowest tuning loss of the run was its first
  evaluation, so the weights analysed are an early, overfitting or barely trained model;
- its tuning loss rose for most of training (more than half the intervals between
  evaluations).

The comparison is read from an evaluation `seqlm eval` wrote under RUN/eval/ for the
same corpus, split and weights; without one it is computed here on at most
`max_tokens` held-out tokens (model, uniform, unigram, best n-gram and per-group
n-grams; no LSTM, which would need training).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.evaluation.baselines import BaselineOptions, fit_baselines, split_sequences
from seqlm.evaluation.group_ngram import group_ngram_baseline
from seqlm.evaluation.model_scorer import check_run_matches_corpus, scorer_from_run
from seqlm.evaluation.paired import (
    BETTER,
    ComparisonOptions,
    best_baseline,
    compare_with_baselines,
    resampling_units,
)
from seqlm.training.checkpoint import BEST_DIR, STATE_FILE
from seqlm.training.runs import summarize_run


@dataclass
class TrustOptions:
    """How the gate checks a run."""

    split: str = field(default="held_out", metadata={"help": "Split the model must win on."})
    checkpoint: str = field(
        default="best", metadata={"help": "Weights checked: best (as analysed) or latest."}
    )
    max_tokens: int = field(
        default=50_000,
        metadata={"help": "Held-out tokens scored when no saved evaluation fits (evenly spaced)."},
    )
    rising_share: float = field(
        default=0.5,
        metadata={"help": "Share of rising evaluation intervals that counts as most."},
    )
    device: str = field(default="cpu", metadata={"help": "Device of the cheap evaluation."})
    comparison: ComparisonOptions = field(
        default_factory=ComparisonOptions, metadata={"help": "Bootstrap of the comparison."}
    )


@dataclass(frozen=True)
class TrustReason:
    """One reason to distrust the model: a few words for captions, a sentence for text."""

    short: str
    detail: str


@dataclass(frozen=True)
class TrustReport:
    """The reasons found (none = the model may be interpreted), the comparison with the
    strongest baseline as a dict (`PairedComparison.to_dict`), and where it came from."""

    reasons: tuple[TrustReason, ...]
    comparison: dict[str, Any] | None
    source: str

    @property
    def trusted(self) -> bool:
        return not self.reasons

    def caption(self) -> str:
        """One line for figure captions and page titles; empty when trusted."""
        if self.trusted:
            return ""
        return "CAUTION, do not interpret: " + "; ".join(r.short for r in self.reasons)

    def lines(self) -> list[str]:
        """The warning for terminals and reports: what was found and what to do."""
        if self.trusted:
            return []
        lines = ["This model has not earned an interpretation of its attention:"]
        lines += [f"  - {r.detail}" for r in self.reasons]
        lines.append(f"  ({self.source})")
        lines.append(
            "  What follows describes this model, not the data. Train a model that beats "
            "the baselines on held-out data (smaller, more regularised, longer; see "
            "docs/training.md) before reading it."
        )
        return lines


def training_reasons(eval_curve: list[tuple[int, float]], rising_share: float = 0.5):
    """Reasons in the tuning-loss curve [(step, loss), ...] of a run."""
    reasons: list[TrustReason] = []
    if len(eval_curve) < 2:
        return reasons
    steps = [s for s, _ in eval_curve]
    losses = np.array([loss for _, loss in eval_curve], dtype=np.float64)
    best = int(np.argmin(losses))
    if best == 0:
        reasons.append(
            TrustReason(
                "best tuning loss at the first evaluation",
                f"it stopped at its first evaluation: the lowest tuning loss ({losses[0]:.4f}) "
                f"was at step {steps[0]}, the first of {len(steps)} evaluations, so the "
                "weights analysed are that early model",
            )
        )
    rises = int(np.sum(np.diff(losses) > 0))
    intervals = len(losses) - 1
    if intervals >= 2 and rises > rising_share * intervals:
        reasons.append(
            TrustReason(
                "tuning loss rose for most of training",
                f"its tuning loss rose in {rises} of {intervals} intervals between "
                f"evaluations (from {losses[0]:.4f} at step {steps[0]} to {losses[-1]:.4f} at "
                f"step {steps[-1]}; lowest {losses[best]:.4f} at step {steps[best]})",
            )
        )
    return reasons


def comparison_reason(comparison: dict[str, Any] | None, split: str) -> TrustReason | None:
    """A reason when the model is not better than the strongest baseline."""
    if comparison is None or comparison.get("verdict") == BETTER:
        return None
    ce = comparison["metrics"]["cross_entropy"]
    baseline, words = comparison["baseline"], split.replace("_", "-")
    relation = "worse than" if comparison["verdict"] == "worse" else "not distinguishable from"
    return TrustReason(
        f"not better than {baseline} on {words} data",
        f"it does not beat the best baseline on {words} data: it is {relation} {baseline} "
        f"(cross-entropy {ce['model']:.4f} vs {ce['baseline']:.4f} nats, difference "
        f"{ce['difference']:+.4f}, {100 * comparison['confidence']:g}% CI "
        f"[{ce['ci_low']:+.4f}, {ce['ci_high']:+.4f}] over {comparison['units']:,} "
        f"{comparison['resampled_by']}s)",
    )


def _weights_step(run: Path, checkpoint: str) -> int | None:

    folder = run / BEST_DIR if checkpoint == "best" and (run / BEST_DIR).is_dir() else run
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError):
        return None


def saved_comparison(run: Path, corpus: Any, options: TrustOptions) -> tuple[dict, Path] | None:
    """The strongest-baseline comparison of an eval.json under RUN/eval/ made on this
    corpus's vocabulary and split with the weights the run holds now, if any (not one
    made with `--sequence-history`: its "model" is the model with a history mixed in)."""
    step = _weights_step(run, options.checkpoint)
    want_hash = ((corpus.manifest or {}).get("vocabulary") or {}).get("hash")
    for path in sorted((run / "eval").glob("*/eval.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        same_data = (payload.get("corpus") or {}).get("vocabulary_hash") == want_hash
        same_weights = (payload.get("run") or {}).get("step") == step
        comparisons = [c for c in payload.get("comparisons") or [] if c.get("metrics")]
        if "sequence_history" in payload:  # judges the model with a cache, not the model
            continue
        if same_data and same_weights and payload.get("split") == options.split and comparisons:
            best = min(comparisons, key=lambda c: c["metrics"]["cross_entropy"]["baseline"])
            return best, path
    return None


def _evenly_spaced(rows: pl.DataFrame, max_tokens: int) -> pl.DataFrame:
    """About `max_tokens` tokens of whole sequences, spread over the split."""
    total = int(rows["length"].sum())
    if total <= max_tokens:
        return rows
    keep = max(1, int(rows.height * max_tokens / total))
    picks = np.unique(np.linspace(0, rows.height - 1, keep).round().astype(np.int64))
    return rows[picks.tolist()]


def computed_comparison(run: Path, corpus: Any, options: TrustOptions) -> tuple[dict, str]:
    """Score up to `max_tokens` tokens of the split with the model and the cheap baselines
    (fitted on train, order chosen on tuning) and compare; returns the strongest
    baseline's comparison and a description of what was scored."""

    scorer, loaded = scorer_from_run(
        run, name="model", checkpoint=options.checkpoint, device=options.device
    )
    check_run_matches_corpus(loaded.config, corpus)
    index = _evenly_spaced(corpus.split(options.split), options.max_tokens)
    sequences = [np.asarray(corpus.sequence(int(i))) for i in index["seq_id"].to_list()]
    _, train = split_sequences(corpus, "train")
    _, tuning = split_sequences(corpus, "tuning")
    context_only = getattr(corpus.vocabulary, "condition_ids", ())
    fixed = BaselineOptions(ngram_orders=())
    fitted = fit_baselines(train, corpus.vocab_size, tuning, fixed, None, context_only)
    scorers = [scorer, *fitted.scorers]
    scores = {s.name: s.score(sequences) for s in scorers}
    scores.update(group_ngram_baseline(corpus, index, sequences, {}))
    scores = {name: s.without_tokens(context_only) for name, s in scores.items()}
    units, unit = resampling_units(index)
    comparisons = compare_with_baselines(
        scores, "model", units, unit=unit, options=options.comparison
    )
    best = best_baseline(comparisons)
    assert best is not None  # uniform always has a finite cross-entropy
    tokens = int(index["length"].sum())
    return best.to_dict(), (
        f"compared now on {index.height:,} {options.split} sequences ({tokens:,} tokens) with "
        "uniform, unigram and n-gram baselines; `seqlm eval` adds the LSTM"
    )


def assess(
    eval_curve: list[tuple[int, float]],
    comparison: dict[str, Any] | None,
    source: str,
    options: TrustOptions | None = None,
) -> TrustReport:
    """The report from a run's tuning curve and its comparison with the strongest
    baseline (`PairedComparison.to_dict()`, e.g. `best_baseline(evaluation.comparisons)`),
    for callers that have evaluated the run already (the quickstart)."""
    options = options or TrustOptions()
    reasons = training_reasons(eval_curve, options.rising_share)
    reason = comparison_reason(comparison, options.split)
    if reason is not None:
        reasons.insert(0, reason)
    return TrustReport(reasons=tuple(reasons), comparison=comparison, source=source)


def interpretation_check(
    run: str | Path, corpus: Any, options: TrustOptions | None = None
) -> TrustReport:
    """The reasons not to interpret the run's model (see the module docstring)."""

    options = options or TrustOptions()
    run = Path(run)
    curve = summarize_run(run).eval_curve
    if corpus.split(options.split).height == 0:
        report = assess(curve, None, "no comparison was possible", options)
        missing = TrustReason(
            f"no {options.split} data to check it on",
            f"the corpus has no {options.split} sequences to compare it with baselines on",
        )
        return TrustReport((missing, *report.reasons), None, report.source)
    try:
        saved = saved_comparison(run, corpus, options)
        if saved is not None:
            return assess(curve, saved[0], f"comparison read from {saved[1]}", options)
        return assess(curve, *computed_comparison(run, corpus, options), options)
    except SeqlmError as error:  # e.g. no tuning split: say why, do not hide it
        report = assess(curve, None, "no comparison was possible", options)
        failed = TrustReason("not compared with baselines", f"it could not be compared: {error}")
        return TrustReport((failed, *report.reasons), None, report.source)
