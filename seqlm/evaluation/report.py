"""Evaluate a trained run beside its baselines, on exactly the same predicted tokens.

`evaluate_run(run, corpus, EvalOptions())` scores the corpus's evaluation split with the
run's model and with uniform, unigram, the best Kneser-Ney n-gram (order chosen on the
tuning split) and optionally an LSTM trained by the same trainer, all fitted on the
corpus's train split. Every scorer reports the positions `prediction_targets` lists
(each token after `[BOS]` through `[EOS]`), checked to be identical before any metric.

Outputs: `summary_table` (a rich table, rows = metrics, columns = models, the best of
each row bold), `eval_json` (everything: settings, windowing, summaries, breakdowns by
split/group/condition/kind/position/repeat, calibration bins) and `write_report` (eval.json,
a reliability diagram and a perplexity-by-group plot).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table

from seqlm.corpus.within_time_order import corpus_within_time_order
from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.baselines import BaselineOptions, fit_baselines, split_sequences
from seqlm.evaluation.calibration import (
    DEFAULT_BINS,
    Calibration,
    calibration_of,
    reliability_diagram,
)
from seqlm.evaluation.group_ngram import group_ngram_baseline
from seqlm.evaluation.lstm import lstm_baseline_run
from seqlm.evaluation.metrics import breakdowns, summarize, token_kinds, token_table
from seqlm.evaluation.model_scorer import check_run_matches_corpus, scorer_from_run
from seqlm.evaluation.ngram import DEFAULT_MAX_ORDER
from seqlm.evaluation.paired import (
    ComparisonOptions,
    PairedComparison,
    compare_with_baselines,
    resampling_units,
)
from seqlm.evaluation.plots import perplexity_by_group_plot
from seqlm.evaluation.scores import Scorer, TokenScores
from seqlm.evaluation.sequence_history import (
    history_codes,
    history_helps_values,
    warn_if_in_sample,
    with_sequence_history,
)
from seqlm.progress import Progress
from seqlm.vocabularies.scheme import EOS_ID

BASELINE_NAMES = ("uniform", "unigram", "ngram", "group-ngram", "lstm")
# group-ngram is left out where the index names fewer than two groups
DEFAULT_BASELINES = ("uniform", "unigram", "ngram", "group-ngram")
MODEL_NAME = "model"
LSTM_NAME = "LSTM"
# Table rows: (label, summary column, True when higher is better).
TABLE_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("cross-entropy", "cross_entropy_nats", False),
    ("perplexity", "perplexity", False),
    ("top-1", "top1", True),
    ("top-1 w/o EOS", "top1_no_eos", True),
    ("top-5", "top5", True),
    ("top-10", "top10", True),
    ("ECE", "ece", False),
)


def _help(default: Any, text: str) -> Any:
    """A dataclass field with its one-line meaning (the settings convention)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class EvalOptions:
    """What to evaluate. The LSTM is read from `lstm_run` when given, else reused from or
    trained into `lstm_folder` (default RUN/eval/<corpus>-lstm) with the run's training
    settings updated by `lstm_train`."""

    split: str | Sequence[str] = _help("held_out", "Split(s) whose sequences are scored.")
    baselines: Sequence[str] = _help(
        DEFAULT_BASELINES, "Baselines from uniform, unigram, ngram, group-ngram, lstm."
    )
    checkpoint: str = _help("best", "Weights to score: best, latest or step_N.")
    context: int | None = _help(None, "Scoring context (None = the model's).")
    stride: int | None = _help(None, "Sliding-window stride (None = context / 2).")
    device: str = _help("auto", "auto, cpu or cuda.")
    ngram_max_order: int = _help(DEFAULT_MAX_ORDER, "Highest n-gram order considered.")
    calibration_bins: int = _help(DEFAULT_BINS, "Bins of the reliability diagram.")
    lstm_run: Path | None = _help(None, "A trained LSTM run to use instead of training one.")
    lstm_folder: Path | None = _help(None, "Where the LSTM baseline is kept or trained.")
    lstm_train: Mapping[str, Any] = _help({}, "TrainConfig overrides for the LSTM baseline.")
    train_split: str = _help("train", "Split the baselines are fitted on.")
    tuning_split: str = _help("tuning", "Split the n-gram order is chosen on.")
    group_column: str = _help("group", "Index column of the groups of group-ngram.")
    sequence_history: bool = _help(
        False,
        "Mix what each sequence says (a code's earlier values, codes already listed at "
        "this time) into the model, the n-gram and the LSTM alike (fitted on tuning).",
    )
    comparison: ComparisonOptions = field(
        default_factory=ComparisonOptions,
        metadata={"help": "Bootstrap settings of the paired comparisons."},
    )

    def __post_init__(self) -> None:
        self.baselines = tuple(self.baselines)
        unknown = [b for b in self.baselines if b not in BASELINE_NAMES]
        if unknown:
            raise ConfigError(
                f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINE_NAMES)}"
            )


@dataclass
class ModelEvaluation:
    """Scores of the model and every baseline on the same tokens, and their summaries.
    `table` holds one row per (model, predicted token)."""

    index: pl.DataFrame
    scores: dict[str, TokenScores]
    table: pl.DataFrame
    summary: pl.DataFrame
    breakdowns: dict[str, pl.DataFrame]
    calibrations: dict[str, Calibration]
    info: dict[str, Any]
    comparisons: list[PairedComparison] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(self.scores)


def parse_baselines(text: str) -> tuple[str, ...]:
    """`ngram,lstm` -> ("uniform", "unigram", "ngram", "lstm"): uniform and unigram cost
    nothing and are always shown; `none` leaves them out too."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    chosen = ["uniform", "unigram", *names]
    return tuple(dict.fromkeys(chosen))


def check_same_targets(scores: Mapping[str, TokenScores]) -> None:
    """Every scorer must report the same (sequence, position, token) rows in order."""
    items = list(scores.items())
    first_name, first = items[0]
    for name, other in items[1:]:
        same = len(other) == len(first) and all(
            np.array_equal(getattr(other, f), getattr(first, f))
            for f in ("sequence", "position", "token")
        )
        if not same:
            raise CorpusError(f"{name} scored other tokens than {first_name}; cannot compare")


def compare_scores(
    index: pl.DataFrame,
    scores: dict[str, TokenScores],
    kinds: Sequence[str] | None,
    calibration_bins: int = DEFAULT_BINS,
    info: dict[str, Any] | None = None,
    *,
    mask: np.ndarray | None = None,
    comparison: ComparisonOptions | None = None,
    model: str = MODEL_NAME,
) -> ModelEvaluation:
    """Summaries, breakdowns, calibration and paired comparisons (of `model` against
    every other scorer, when present) of scorers that scored the same tokens. `mask`
    (one bool per target) keeps targets for every metric of every scorer alike."""
    check_same_targets(scores)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        scores = {
            name: TokenScores(**{f.name: getattr(s, f.name)[keep] for f in fields(TokenScores)})
            for name, s in scores.items()
        }
    tables = [token_table(s, index, kinds, model=name) for name, s in scores.items()]
    table = pl.concat(tables, how="vertical")
    calibrations = {name: calibration_of(s, calibration_bins) for name, s in scores.items()}
    order = pl.DataFrame({"model": list(scores), "_order": range(len(scores))})
    no_eos = summarize(table.filter(pl.col("token") != EOS_ID), ["model"], top_k=(1,))
    summary = (
        summarize(table, ["model"])
        .join(order, on="model")
        .join(no_eos.select("model", pl.col("top1").alias("top1_no_eos")), on="model", how="left")
        .sort("_order")
        .drop("_order")
        .with_columns(
            pl.Series("ece", [calibrations[name].ece for name in scores]),
            pl.Series("max_calibration_gap", [calibrations[name].max_gap for name in scores]),
        )
    )
    comparisons = []
    if model in scores and len(scores) > 1 and len(scores[model]):
        units, unit = resampling_units(index)
        comparisons = compare_with_baselines(
            scores, model, units, unit=unit, options=comparison or ComparisonOptions()
        )
    return ModelEvaluation(
        index=index,
        scores=scores,
        table=table,
        summary=summary,
        breakdowns=breakdowns(table),
        calibrations=calibrations,
        info=info or {},
        comparisons=comparisons,
    )


def evaluate_run(
    run: str | Path,
    corpus: Any,
    options: EvalOptions | None = None,
    progress: Progress | None = None,
) -> ModelEvaluation:
    """Score `corpus`'s evaluation split with the run's model and the chosen baselines."""
    options = options or EvalOptions()
    run = Path(run)
    scorer, loaded = scorer_from_run(
        run,
        name=MODEL_NAME,
        checkpoint=options.checkpoint,
        context=options.context,
        stride=options.stride,
        device=options.device,
    )
    check_run_matches_corpus(loaded.config, corpus)
    index, sequences = split_sequences(corpus, options.split)
    if not sequences:
        raise CorpusError(f"{corpus.path}: split {options.split!r} has no sequences")
    scorers: list[Scorer] = [scorer]
    info: dict[str, Any] = {
        "run": {
            "path": str(run.resolve()),
            "model_type": loaded.model_type,
            "weights": str(loaded.weights),
            "step": loaded.step,
            "model": loaded.config.get("model"),
        },
        "corpus": {
            "path": str(Path(corpus.path).resolve()),
            "vocabulary_hash": (corpus.manifest.get("vocabulary") or {}).get("hash"),
            "vocab_size": corpus.vocab_size,
            # The order of the events of one timestamp: the figures score that order.
            "within_time_order": corpus_within_time_order(corpus.manifest),
            "shared_time_share": shared_time_share(corpus, index),
        },
        "split": options.split,
        "sequences": len(sequences),
        "targets": "every token after [BOS] through [EOS] of each sequence, less conditioning "
        "tokens ([COND], context only); all models score exactly these",
        "scoring": {MODEL_NAME: scorer.describe()},
        "baselines_fitted_on": options.train_split,
    }
    baseline_scorers, baseline_info = _baselines(corpus, run, loaded.config, options, progress)
    scorers += baseline_scorers
    info["baselines"] = baseline_info
    if options.sequence_history:
        warn_if_in_sample(options.split, options.tuning_split)
        _, tuning = split_sequences(corpus, options.tuning_split)
        codes = history_codes(corpus.vocabulary)
        scorers, info["sequence_history"] = with_sequence_history(
            scorers, tuning, codes, MODEL_NAME, progress
        )
    else:  # `seqlm eval` suggests the option where there are values to remember
        info["sequence_history_available"] = history_helps_values(corpus.vocabulary)
    # Conditioning tokens are context only: no model is scored on them.
    context_only = corpus.vocabulary.condition_ids
    scores = {s.name: s.score(sequences, progress).without_tokens(context_only) for s in scorers}
    group_scores = {}
    if "group-ngram" in options.baselines:
        group_scores = group_ngram_baseline(
            corpus,
            index,
            sequences,
            info.setdefault("baselines", {}),
            group=options.group_column,
            train_split=options.train_split,
            tuning_split=options.tuning_split,
            max_order=options.ngram_max_order,
        )
    scores.update({k: v.without_tokens(context_only) for k, v in group_scores.items()})
    kinds = token_kinds(corpus.vocabulary.tokens)
    return compare_scores(
        index, scores, kinds, options.calibration_bins, info, comparison=options.comparison
    )


def _baselines(
    corpus: Any,
    run: Path,
    run_config: dict[str, Any],
    options: EvalOptions,
    progress: Progress | None,
) -> tuple[list[Scorer], dict[str, Any]]:
    chosen = set(options.baselines)
    info: dict[str, Any] = {}
    scorers: list[Scorer] = []
    if chosen & {"uniform", "unigram", "ngram"}:
        _, train = split_sequences(corpus, options.train_split)
        _, tuning = split_sequences(corpus, options.tuning_split)
        if not any(len(s) > 1 for s in train):
            raise CorpusError(f"{corpus.path}: split {options.train_split!r} has no tokens")
        has_tuning = any(len(s) > 1 for s in tuning)
        fixed = () if has_tuning or "ngram" not in chosen else (min(3, options.ngram_max_order),)
        baseline_options = BaselineOptions(
            ngram_orders=fixed,
            max_order=options.ngram_max_order,
            include_uniform="uniform" in chosen,
            include_unigram="unigram" in chosen,
        )
        if "ngram" not in chosen:
            tuning = []
        context_only = corpus.vocabulary.condition_ids  # not counted in the order choice
        fitted = fit_baselines(
            train, corpus.vocab_size, tuning, baseline_options, progress, context_only
        )
        scorers += fitted.scorers
        if fitted.selection is not None:
            info["ngram"] = {
                "best_order": fitted.selection.best_order,
                "tuning_perplexity": {
                    str(k): v for k, v in fitted.selection.tuning_perplexity.items()
                },
                "chosen_on": options.tuning_split,
            }
    if "lstm" in chosen:
        scorer, lstm_info = _lstm_scorer(corpus, run, run_config, options, progress)
        scorers.append(scorer)
        info["lstm"] = lstm_info
    return scorers, info


def shared_time_share(corpus: Any, index: pl.DataFrame) -> float | None:
    """Share of the scored sequences' event targets (after the first; [EOS] left out: it
    takes the last event's time) whose time equals the token's before them: how much of a next-event figure scores the order of events that
    share a timestamp. None for a corpus without times."""
    if getattr(corpus, "times", None) is None:
        return None
    shared = total = 0
    for seq_id in index["seq_id"].to_list():
        times = np.asarray(corpus.sequence_times(int(seq_id)))[1:-1]  # events, no [EOS]
        if times.shape[0] > 1:
            shared += int(np.count_nonzero(times[1:] == times[:-1]))
            total += times.shape[0] - 1
    return shared / total if total else 0.0


def _lstm_scorer(
    corpus: Any,
    run: Path,
    run_config: dict[str, Any],
    options: EvalOptions,
    progress: Progress | None,
) -> tuple[Scorer, dict[str, Any]]:

    trained = False
    folder = options.lstm_run
    if folder is None:
        folder = options.lstm_folder or default_lstm_folder(run, corpus)
        folder, trained = lstm_baseline_run(
            corpus,
            folder,
            run_config["model"],
            run_config.get("train", {}),
            overrides=options.lstm_train,
            progress=progress,
        )
    scorer, loaded = scorer_from_run(
        folder, name=LSTM_NAME, checkpoint=options.checkpoint, device=options.device
    )
    check_run_matches_corpus(loaded.config, corpus)
    info = {
        "run": str(Path(folder).resolve()),
        "trained_now": trained,
        "model": loaded.config.get("model"),
        "train": loaded.config.get("train"),
        "step": loaded.step,
        "scoring": scorer.describe(),
    }
    return scorer, info


def default_output_folder(run: Path, corpus: Any, split: str | Sequence[str]) -> Path:
    """RUN/eval/<corpus folder name>-<split>: beside the run's files, never over them."""
    name = split if isinstance(split, str) else "+".join(split)
    return Path(run) / "eval" / f"{Path(corpus.path).name}-{name}"


def default_lstm_folder(run: Path, corpus: Any) -> Path:
    """RUN/eval/<corpus folder name>-lstm: where the LSTM baseline of a run is kept."""
    return Path(run) / "eval" / f"{Path(corpus.path).name}-lstm"


# ----- presenting ---------------------------------------------------------------------------


def _format(column: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column.startswith("top"):
        return f"{100 * value:.1f}%"
    if column == "perplexity":
        return f"{value:,.2f}" if value < 1000 else f"{value:,.0f}"
    return f"{value:.4f}" if column == "ece" else f"{value:.3f}"


def summary_table(summary: pl.DataFrame, title: str | None = None) -> Table:
    """Rows = metrics, columns = models; the best value of each row in bold."""
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    table.add_column("metric")
    models = summary["model"].to_list()
    for name in models:
        # "best n-gram (8-gram KN)" on two lines keeps the table inside 80 columns
        table.add_column(name.replace(" (", "\n("), justify="right")
    for label, column, higher_is_better in TABLE_ROWS:
        values = summary[column].to_list()
        finite = [v for v in values if v is not None and math.isfinite(v)]
        best = (max if higher_is_better else min)(finite) if finite else None
        cells = []
        for value in values:
            text = _format(column, value)
            cells.append(f"[bold]{text}[/bold]" if best is not None and value == best else text)
        table.add_row(label, *cells)
    tokens = summary["tokens"].to_list()
    if tokens:
        table.caption = f"cross-entropy in nats; {tokens[0]:,} predicted tokens per model"
    return table


def json_ready(value: Any) -> Any:
    """JSON-safe values: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def eval_json(evaluation: ModelEvaluation) -> dict[str, Any]:
    """Everything the evaluation found, as plain JSON values."""
    return json_ready(
        {
            **evaluation.info,
            "models": evaluation.models,
            "summary": evaluation.summary.to_dicts(),
            "breakdowns": {k: v.to_dicts() for k, v in evaluation.breakdowns.items()},
            "calibration": {
                name: {"ece": c.ece, "max_gap": c.max_gap, "bins": c.bins.to_dicts()}
                for name, c in evaluation.calibrations.items()
            },
            "comparisons": [c.to_dict() for c in evaluation.comparisons],
        }
    )


def write_report(evaluation: ModelEvaluation, folder: str | Path) -> dict[str, Path]:
    """eval.json, reliability.png and perplexity_by_group.png (when the evaluated
    sequences have groups) in `folder`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["reliability"] = reliability_diagram(
        evaluation.calibrations, folder / "reliability.png"
    )
    by_group = evaluation.breakdowns.get("group")
    if by_group is not None and by_group["group"].drop_nulls().len():
        written["perplexity_by_group"] = perplexity_by_group_plot(
            by_group.drop_nulls("group"),
            folder / "perplexity_by_group.png",
            models=evaluation.models,
            title="Perplexity by group",
        )
    payload = eval_json(evaluation)
    payload["plots"] = {k: v.name for k, v in written.items()}
    path = folder / "eval.json"
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    written["json"] = path
    return written
