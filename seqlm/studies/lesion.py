"""The lesion comparison of the FinchGPT paper, on any corpus with a condition column.

A model trained on pre-lesion song only is scored on each bird's held-out pre-lesion
bouts and on all of its post-lesion bouts; if the lesion made song syntax more
variable, the post-lesion perplexity is higher. Beside the model: the best Kneser-Ney
n-gram fitted on the same pre-lesion train split (order chosen on the pre-lesion
tuning split) and, when one model serves all birds, an n-gram per bird (the paper's
reference setting, and the README's figures for this data).

`run_lesion_experiment` is the one-command version: it writes the pre-lesion corpus
(`subset_corpus`), trains one model for all birds (or one per bird), compares, and
writes `lesion.json` and `lesion.png`. `lesion_comparison` takes runs trained elsewhere
(the two-command recipe: `seqlm subset ... --where condition=pre`, `seqlm train`, then
`seqlm lesion CORPUS --run RUN`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table

from seqlm.corpus import load_corpus
from seqlm.corpus.subset import subset_corpus
from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.group_ngram import best_ngram_on, per_group_ngram_scores
from seqlm.evaluation.lstm import run_finished
from seqlm.evaluation.metrics import summarize, token_table
from seqlm.evaluation.model_scorer import check_run_matches_corpus, scorer_from_run
from seqlm.evaluation.ngram import DEFAULT_MAX_ORDER
from seqlm.evaluation.paired import compare_with_baselines, resampling_units
from seqlm.evaluation.plots import save_bar_figure
from seqlm.evaluation.report import json_ready
from seqlm.evaluation.scores import TokenScores
from seqlm.outputs import remove_output
from seqlm.plotting import new_figure, plain_text
from seqlm.progress import Progress
from seqlm.studies.lesion_bouts import bout_sums
from seqlm.studies.lesion_calibration import calibrate_on_tuning
from seqlm.studies.lesion_select import choose_fine_tuned_or_pool
from seqlm.training.session import train_on_corpus

ALL_GROUPS = "all"
MODEL = "model"
NGRAM = "n-gram"
PER_GROUP_NGRAM = "per-bird n-gram"
# `LesionOptions.condition` for a corpus without conditions (one day of song per bird):
# every sequence counts as pre-lesion, held out in its split, and there is no post
# comparison. The study then compares each bird's model with its n-gram on held-out song.
NO_CONDITION = ""
IMPLIED_CONDITION = "_lesion_condition"


@dataclass
class LesionOptions:
    """Column names and values of the experiment, and how models are scored."""

    condition: str = "condition"  # NO_CONDITION: the corpus has none (all pre, no post)
    pre: str = "pre"
    post: str = "post"
    group: str = "group"
    held_out_split: str = "held_out"
    train_split: str = "train"
    tuning_split: str = "tuning"
    ngram_max_order: int = DEFAULT_MAX_ORDER
    checkpoint: str = "best"
    device: str = "auto"
    calibrate_on_tuning: bool = True  # a temperature per run, fitted on its tuning song


@dataclass
class LesionResult:
    """`rows`: one per (group, model, condition) with tokens, cross-entropy, perplexity,
    top-1; group `all` pools every bird a model covers."""

    rows: pl.DataFrame
    models: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    bouts: pl.DataFrame | None = None  # per-sequence sums (`lesion_bouts`), never written


def with_implied_condition(corpus: Any, options: LesionOptions) -> tuple[Any, LesionOptions]:
    """The corpus and options to use: unchanged, or with `condition=""` (`NO_CONDITION`)
    an in-memory condition column that makes every sequence pre-lesion."""
    if options.condition != NO_CONDITION:
        return corpus, options
    column = pl.lit(options.pre).alias(IMPLIED_CONDITION)
    implied = dataclasses.replace(corpus, index=corpus.index.with_columns(column))
    return implied, dataclasses.replace(options, condition=IMPLIED_CONDITION)


def _sequences(corpus: Any, rows: pl.DataFrame) -> list[np.ndarray]:
    return [np.asarray(corpus.sequence(int(i))) for i in rows["seq_id"].to_list()]


def _rows(corpus: Any, options: LesionOptions, condition: str, groups: Sequence[str]):
    index = corpus.index
    for column in (options.condition, options.group):
        if column not in index.columns:
            raise CorpusError(f"{corpus.path}: the index has no {column!r} column")
    return index.filter(
        (pl.col(options.condition).cast(pl.String) == condition)
        & pl.col(options.group).cast(pl.String).is_in(list(groups))
    )


def _best_ngram(corpus: Any, pre: pl.DataFrame, options: LesionOptions, name: str):
    return best_ngram_on(
        corpus,
        pre,
        train_split=options.train_split,
        tuning_split=options.tuning_split,
        max_order=options.ngram_max_order,
        name=f"pre-lesion {name}",
    )


def _evaluation_rows(corpus: Any, options: LesionOptions, groups: Sequence[str]) -> pl.DataFrame:
    held = _rows(corpus, options, options.pre, groups).filter(
        pl.col("split") == options.held_out_split
    )
    post = _rows(corpus, options, options.post, groups)
    needs_post = options.condition != IMPLIED_CONDITION
    if held.height == 0 or (needs_post and post.height == 0):
        raise CorpusError(
            f"{corpus.path}: groups {list(groups)} need held-out {options.pre!r} and "
            f"{options.post!r} sequences"
        )
    return pl.concat([held, post], how="vertical")


def _token_tables(
    index: pl.DataFrame, scores: Mapping[str, TokenScores], options: LesionOptions
) -> pl.DataFrame:
    tables = [token_table(s, index, model=name) for name, s in scores.items()]
    return pl.concat(tables, how="vertical").select(
        "model",
        "log_prob",
        "top1",
        "max_prob",
        pl.col(options.group).cast(pl.String).alias("group_name"),
        pl.col(options.condition).cast(pl.String).alias("condition_name"),
    )


def _summaries(table: pl.DataFrame) -> pl.DataFrame:
    """Per (group, model, condition), and pooled over groups as group `all`."""
    per_group = summarize(table, ["group_name", "model", "condition_name"], top_k=(1,))
    pooled = summarize(table, ["model", "condition_name"], top_k=(1,)).with_columns(
        pl.lit(ALL_GROUPS).alias("group_name")
    )
    frame = pl.concat([per_group, pooled.select(per_group.columns)], how="vertical")
    return frame.rename({"group_name": "group", "condition_name": "condition"}).select(
        "group", "model", "condition", "tokens", "cross_entropy_nats", "perplexity", "top1"
    )


def lesion_comparison(
    corpus: Any,
    runs: Mapping[str, str | Path],
    options: LesionOptions | None = None,
    progress: Progress | None = None,
) -> LesionResult:
    """Score held-out pre and all post sequences with each run and its n-grams.

    `runs` maps `all` to one model for every group, or each group (bird) to its own
    model. The n-gram beside a model is fitted on the pre-lesion train sequences of the
    groups that model covers, as the model was.
    """
    corpus, options = with_implied_condition(corpus, options or LesionOptions())
    if not runs:
        raise ConfigError("the lesion comparison needs at least one run")
    all_groups = sorted(str(g) for g in corpus.index[options.group].drop_nulls().unique().to_list())
    frames, bouts, info = [], [], {"runs": {}, "ngram_orders": {}, "corpus": str(corpus.path)}
    context_only = corpus.vocabulary.condition_ids
    per_group: list[tuple[pl.DataFrame, dict[str, TokenScores]]] = []
    for key, run in runs.items():
        groups = all_groups if key == ALL_GROUPS else [str(key)]
        scorer, loaded = scorer_from_run(
            run, name=MODEL, checkpoint=options.checkpoint, device=options.device
        )
        check_run_matches_corpus(loaded.config, corpus)
        index = _evaluation_rows(corpus, options, groups)
        sequences = _sequences(corpus, index)
        pre = _rows(corpus, options, options.pre, groups)
        ngram, order = _best_ngram(corpus, pre, options, str(key))
        if options.calibrate_on_tuning:  # T from the tuning split, as the n-gram's order
            tuning = pre.filter(pl.col("split") == options.tuning_split)
            fit = calibrate_on_tuning(scorer, corpus, tuning, context_only, str(key))
            info.setdefault("temperature_fit", {})[key] = fit
        scores = {MODEL: scorer.score(sequences, progress), NGRAM: ngram.score(sequences)}
        info["runs"][key] = {"path": str(Path(run).resolve()), "step": loaded.step}
        info["ngram_orders"][key] = order
        if key == ALL_GROUPS and len(groups) > 1:
            scores[PER_GROUP_NGRAM] = _per_group_ngram(corpus, index, sequences, options, info)
        # Conditioning tokens are context only: no model is scored on them.
        scores = {name: s.without_tokens(context_only) for name, s in scores.items()}
        frames.append(_token_tables(index, scores, options))
        own = PER_GROUP_NGRAM if PER_GROUP_NGRAM in scores else NGRAM
        columns = {"group": options.group, "condition": options.condition}
        bouts.append(bout_sums(index, scores, own, **columns))
        info["scoring"] = scorer.describe()
        info.setdefault("comparisons", []).extend(_paired(index, scores, options, str(key)))
        if PER_GROUP_NGRAM in scores:
            info["comparisons"].extend(_each_group_paired(index, scores, options))
        if key != ALL_GROUPS:
            per_group.append((index, scores))
    if len(per_group) > 1:
        info["comparisons"].extend(_pooled_over_groups(per_group, options))
    table = pl.concat(frames, how="vertical")
    models = table["model"].unique(maintain_order=True).to_list()
    rows = _summaries(table)
    info["setting"] = "one model for all groups" if ALL_GROUPS in runs else "one model per group"
    info["options"] = {k: v for k, v in vars(options).items()}
    return LesionResult(rows, models, info, bouts=pl.concat(bouts, how="vertical"))


def _per_group_ngram(
    corpus: Any,
    index: pl.DataFrame,
    sequences: list[np.ndarray],
    options: LesionOptions,
    info: dict[str, Any],
) -> TokenScores:
    """Each group's sequences scored by an n-gram fitted on that group's pre-lesion train."""
    pre = _rows(corpus, options, options.pre, index[options.group].cast(pl.String).unique())
    scores, info["per_group_ngram_orders"] = per_group_ngram_scores(
        corpus,
        index,
        sequences,
        pre,
        group=options.group,
        train_split=options.train_split,
        tuning_split=options.tuning_split,
        max_order=options.ngram_max_order,
    )
    return scores


def _each_group_paired(
    index: pl.DataFrame, scores: Mapping[str, TokenScores], options: LesionOptions
) -> list[dict[str, Any]]:
    """One model for all groups, against each group's own n-gram on that group's
    sequences: one paired interval per group (run = the group's name)."""
    labels = index[options.group].cast(pl.String).to_numpy()
    found = []
    for group in sorted(set(labels.tolist())):
        members = labels == group
        renumber = np.cumsum(members) - 1  # index row -> row within the group
        part = {}
        for name in (MODEL, PER_GROUP_NGRAM):
            keep = members[scores[name].sequence]
            picked = {
                f.name: getattr(scores[name], f.name)[keep] for f in dataclasses.fields(TokenScores)
            }
            picked["sequence"] = renumber[picked["sequence"]]
            part[name] = TokenScores(**picked)
        found += _paired(index.filter(pl.Series(members)), part, options, group)
    return found


def _pooled_over_groups(
    parts: Sequence[tuple[pl.DataFrame, Mapping[str, TokenScores]]], options: LesionOptions
) -> list[dict[str, Any]]:
    """One model per group, pooled: every group scored by its own model against every
    group scored by its own n-gram (the per-bird n-grams), one paired interval over all
    groups' sequences (run `all`)."""
    indexes, models, ngrams, offset = [], [], [], 0
    for index, scores in parts:
        indexes.append(index)
        for found, name in ((models, MODEL), (ngrams, NGRAM)):
            found.append(dataclasses.replace(scores[name], sequence=scores[name].sequence + offset))
        offset += index.height
    pooled = {MODEL: TokenScores.concat(models), PER_GROUP_NGRAM: TokenScores.concat(ngrams)}
    return _paired(pl.concat(indexes, how="vertical"), pooled, options, ALL_GROUPS)


def _paired(
    index: pl.DataFrame, scores: Mapping[str, TokenScores], options: LesionOptions, key: str
) -> list[dict[str, Any]]:
    """The model against each n-gram on held-out pre and on post sequences, with paired
    bootstrap intervals (resampled by entity where entities own several sequences)."""
    units, unit = resampling_units(index)
    condition = index[options.condition].cast(pl.String).to_numpy()
    found = []
    for name in (options.pre, options.post):
        mask = condition[scores[MODEL].sequence] == name
        if not mask.any():
            continue
        comparisons = compare_with_baselines(scores, MODEL, units, unit=unit, mask=mask)
        found += [{"run": key, "condition": name, **c.to_dict()} for c in comparisons]
    return found


# ----- presenting -------------------------------------------------------------------------


def lesion_wide(result: LesionResult) -> pl.DataFrame:
    """One row per group: `<model> pre`, `<model> post`, `<model> post/pre` perplexities."""
    rows = result.rows
    out = rows.select("group").unique(maintain_order=True)
    for model in result.models:
        part = rows.filter(pl.col("model") == model)
        pre = part.filter(pl.col("condition") == result.info["options"]["pre"])
        post = part.filter(pl.col("condition") == result.info["options"]["post"])
        out = out.join(
            pre.select("group", pl.col("perplexity").alias(f"{model} pre")), on="group", how="left"
        ).join(
            post.select("group", pl.col("perplexity").alias(f"{model} post")),
            on="group",
            how="left",
        )
        out = out.with_columns(
            (pl.col(f"{model} post") / pl.col(f"{model} pre")).alias(f"{model} post/pre")
        )
    groups = out["group"].to_list()
    ordered = sorted(g for g in groups if g != ALL_GROUPS) + [ALL_GROUPS]
    rank = pl.DataFrame({"group": ordered, "_order": range(len(ordered))})
    return out.join(rank, on="group").sort("_order").drop("_order")


def lesion_table(result: LesionResult, title: str | None = None) -> Table:
    """One row per group, one column per model: `pre -> post (x ratio)` perplexities."""
    wide = lesion_wide(result)
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    table.add_column("group")
    for model in result.models:
        table.add_column(f"{model}\npre → post (×)", justify="right")

    def number(value: float | None) -> str:
        return f"{value:.2f}" if value is not None and math.isfinite(value) else "-"

    for row in wide.iter_rows(named=True):
        cells = [
            f"{number(row[f'{m} pre'])} → {number(row[f'{m} post'])} "
            f"(×{number(row[f'{m} post/pre'])})"
            for m in result.models
        ]
        table.add_row(row["group"], *cells, style="bold" if row["group"] == ALL_GROUPS else None)
    table.caption = "perplexity on held-out pre-lesion and on all post-lesion sequences"
    return table


@plain_text
def lesion_plot(result: LesionResult, path: str | Path, title: str | None = None) -> Path:
    """Grouped bars per group: each model's pre (light) and post (dark) perplexity."""
    from matplotlib.colors import to_rgba

    wide = lesion_wide(result)
    groups = wide["group"].to_list()
    bars_per_group = 2 * len(result.models)
    width = 0.84 / bars_per_group
    # At most ~11 inches wide, so the page and a paper column show it without shrinking the
    # text; the values are in the table, so bars are labelled only while they stay legible.
    figure = new_figure(figsize=(min(11.0, 2.5 + 0.2 * len(groups) * bars_per_group), 5.5))
    label_bars = len(groups) * bars_per_group <= 30
    figure.set_layout_engine("constrained")
    axes = figure.subplots()
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red"]
    x = np.arange(len(groups))
    slot = 0
    for number, model in enumerate(result.models):
        colour = palette[number % len(palette)]
        for condition, alpha in (("pre", 0.45), ("post", 1.0)):
            heights = wide[f"{model} {condition}"].to_numpy()
            offsets = x + (slot - (bars_per_group - 1) / 2) * width
            bars = axes.bar(
                offsets,
                heights,
                width=width,
                color=to_rgba(colour, alpha),
                edgecolor=colour,
                label=f"{model}, {condition}-lesion",
            )
            if label_bars:
                labels = [f"{h:.2f}" if np.isfinite(h) else "" for h in heights]
                axes.bar_label(bars, labels=labels, fontsize=7, rotation=90, padding=2)
            slot += 1
    axes.set_xticks(x, groups)
    axes.margins(y=0.18)
    axes.set(
        xlabel="bird",
        ylabel="perplexity (lower is better)",
        title=title or "Held-out pre-lesion vs post-lesion song",
    )
    return save_bar_figure(figure, axes, path, legend_columns=len(result.models))


def lesion_comparison_lines(result: LesionResult) -> list[str]:
    """One sentence per (run, condition, baseline): the paired comparison in words."""
    lines = [
        f"[{c['run']}, {c['condition']}] {c['sentence']}"
        for c in result.info.get("comparisons", [])
    ]
    choices = result.info.get("fine_tune_choice", {}).values()
    fits = result.info.get("temperature_fit", {}).values()
    return lines + [c["sentence"] for c in choices] + [f["sentence"] for f in fits]


def lesion_json(result: LesionResult) -> dict[str, Any]:
    return json_ready(
        {
            "written_by": "seqlm lesion",  # marks the file as seqlm's (seqlm.outputs)
            **result.info,
            "models": result.models,
            "rows": result.rows.to_dicts(),
            "table": lesion_wide(result).to_dicts(),
        }
    )


def write_lesion_report(result: LesionResult, folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = lesion_plot(result, folder / "lesion.png")
    path = folder / "lesion.json"
    payload = lesion_json(result)
    payload["plot"] = png.name
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return {"json": path, "plot": png}


# ----- one command ----------------------------------------------------------------------------


def run_lesion_experiment(
    corpus_path: str | Path,
    out: str | Path,
    *,
    settings: Any = None,
    per_group: bool = False,
    options: LesionOptions | None = None,
    progress: Progress | None = None,
    init: str | Path | None = None,
    select_on_tuning: bool = True,
) -> LesionResult:
    """Subset to pre-lesion sequences, train (one model, or one per group), compare.

    `init`: a run (the model pooled over all groups) whose weights start each run, so
    per-group models are fine-tuned from the pool instead of trained from scratch. With
    `select_on_tuning`, a group whose fine-tuned run is not better than the pool on its
    own tuning split (paired bootstrap, `seqlm.studies.lesion_select`) is scored with
    the pool; `lesion.json` says which under `fine_tune_choice`.

    Writes OUT/pre (or OUT/pre-<group>) corpora, OUT/run (or OUT/run-<group>) runs, and
    OUT/lesion.json + OUT/lesion.png. A run that already finished is reused, so the
    command can be repeated to re-score. `settings` is a `RunSettings` (preset, model
    and train overrides).
    """
    out = Path(out)
    corpus, options = with_implied_condition(load_corpus(corpus_path), options or LesionOptions())
    if per_group:
        groups = sorted(str(g) for g in corpus.index[options.group].drop_nulls().unique())
    else:
        groups = [ALL_GROUPS]
    runs: dict[str, Path] = {}
    choices: dict[str, dict[str, Any]] = {}
    for key in groups:
        suffix = "" if key == ALL_GROUPS else f"-{key}"
        where: dict[str, Any] = {options.condition: options.pre}
        if key != ALL_GROUPS:
            where[options.group] = key
        run = out / f"run{suffix}"
        if not run_finished(run):
            pre = subset_corpus(corpus, out / f"pre{suffix}", where, overwrite=True)
            if run.exists():
                remove_output(run)  # an unfinished run of an earlier call (only a seqlm run)
            train_on_corpus(pre.path, run, settings, progress=progress, init=init)
        runs[key] = run
        if init is not None and per_group and select_on_tuning:
            choice = choose_fine_tuned_or_pool(
                key,
                run,
                init,
                out / f"pre{suffix}",
                tuning_split=options.tuning_split,
                device=options.device,
                checkpoint=options.checkpoint,
            )
            runs[key] = Path(choice.run)
            choices[key] = {**choice.to_dict(), "sentence": choice.sentence()}
    result = lesion_comparison(corpus, runs, options, progress)
    if choices:
        result.info["fine_tune_choice"] = choices
    write_lesion_report(result, out)
    return result
