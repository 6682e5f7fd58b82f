"""One lesion study repeated over several entity-level splits, pooled per group.

Why: a bird with little song has few held-out bouts in any one split (finch bird1: 10
of its 102 pre-lesion bouts), so one split's interval is wide and its point estimate
moves with which bouts fell into held-out. On the bundled data, the quickstart's pooled
model against bird1's own n-gram (`seqlm lesion --run POOL`): +0.0068 nats on split seed
0, -0.0112 and -0.0218 on seeds 1 and 2 (docs/training.md, "Five splits").

The user ingests the data again with other split seeds (`seqlm ingest ... --option
splits.seed=S`: the vocabulary and n-grams are then fitted on that split's train bouts
only), trains and runs `seqlm lesion` once per split, and `seqlm lesion-splits LESION...`
pools the folders here. Each folder is scored again exactly as its `seqlm lesion` did
(its runs, options and fitted temperatures; `lesion_comparison`), so every scored bout
was outside the train split of the model and n-gram that score it. Per group and
condition, a bout's model-minus-own-n-gram log-loss is averaged over the splits that
scored it, summed over bouts and divided by their targets; the interval resamples the
distinct bouts (entities), the lesion study's unit. Post-lesion bouts are scored in every
split, so there the pooling averages the splits' models; held-out pre-lesion bouts are
each scored by the one or few splits that held them out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from seqlm.corpus import load_corpus
from seqlm.errors import ConfigError
from seqlm.evaluation.paired import ComparisonOptions, MetricDifference, compare_unit_sums
from seqlm.outputs import output_file, output_folder, output_lock
from seqlm.progress import Progress
from seqlm.studies.lesion import (
    ALL_GROUPS,
    IMPLIED_CONDITION,
    NO_CONDITION,
    LesionOptions,
    lesion_comparison,
)
from seqlm.studies.lesion_bouts import MODEL_SUMS, OWN_SUMS
from seqlm.studies.lesion_splits_plot import splits_plot

OWN_NGRAM = "its own n-gram"
RESULT_FILE = "lesion_splits.json"
PLOT_FILE = "lesion_splits.png"
FEW_BOUTS = 20  # below this many held-out bouts, `seqlm lesion` points to the pooling


@dataclass
class SplitsResult:
    """`rows`: one per (group, condition), groups then `all`, with the pooled comparison
    and each split's point estimate; `splits`: what each lesion folder was."""

    rows: list[dict[str, Any]]
    splits: list[dict[str, Any]] = field(default_factory=list)


def lesion_inputs(folder: str | Path) -> tuple[Path, dict[str, str], LesionOptions]:
    """The corpus, runs and options one `seqlm lesion` folder scored with."""
    path = Path(folder) / "lesion.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no lesion.json (run `seqlm lesion` there first)")
    info = json.loads(path.read_text(encoding="utf-8"))
    if "corpus" not in info:
        raise ConfigError(
            f"{path}: written before lesion.json named its corpus; run `seqlm lesion` again"
        )
    runs = {key: entry["path"] for key, entry in info["runs"].items()}
    known = set(LesionOptions.__dataclass_fields__)
    options = LesionOptions(**{k: v for k, v in info["options"].items() if k in known})
    if options.condition == IMPLIED_CONDITION:  # `seqlm lesion --condition ''`
        options = dataclasses.replace(options, condition=NO_CONDITION)
    return Path(info["corpus"]), runs, options


def split_bouts(
    folder: str | Path,
    inputs: tuple[Path, dict[str, str], LesionOptions],
    progress: Progress | None = None,
) -> tuple[pl.DataFrame, dict]:
    """One lesion folder scored again with its `lesion_inputs`: its per-bout sums
    (`lesion_bouts.bout_sums`) and a description of the split (corpus, split settings)."""
    corpus_path, runs, options = inputs
    corpus = load_corpus(corpus_path)
    result = lesion_comparison(corpus, runs, options, progress)
    held = corpus.index.filter(pl.col("split") == options.held_out_split).height
    about = {
        "lesion": str(Path(folder)),
        "corpus": str(corpus_path),
        "splits": corpus.manifest.get("splits", {}),
        "held_out_sequences": held,
        "setting": result.info["setting"],
        "pre": options.pre,
    }
    return result.bouts, about


def pool_bouts(
    bouts: Sequence[pl.DataFrame], options: ComparisonOptions | None = None
) -> list[dict[str, Any]]:
    """Per (group, condition), and over all groups (each group scored by its own model
    and n-gram), the model minus its own n-gram pooled over the splits (module
    docstring); `bouts[i]` is split i's `bout_sums`."""
    options = options or ComparisonOptions()
    if len(bouts) < 1:
        raise ConfigError("pooling needs at least one split")
    frames = [b.with_columns(pl.lit(i).alias("split")) for i, b in enumerate(bouts)]
    table = pl.concat(frames, how="vertical")
    everyone = table.with_columns(
        pl.lit(ALL_GROUPS).alias("group"),
        pl.concat_str("group", "entity", separator="\x00").alias("entity"),
    )
    rows = []
    for (group, condition), part in _ordered_parts(table, everyone):
        rows.append(_pooled_row(group, condition, part, len(bouts), options))
    return rows


def _ordered_parts(table: pl.DataFrame, everyone: pl.DataFrame):
    for source in (table, everyone):
        keys = source.select("group", "condition").unique().sort("group", "condition")
        for group, condition in keys.iter_rows():
            yield (
                (group, condition),
                source.filter((pl.col("group") == group) & (pl.col("condition") == condition)),
            )


def _pooled_row(
    group: str, condition: str, part: pl.DataFrame, splits: int, options: ComparisonOptions
) -> dict[str, Any]:
    gap = pl.col("model_nats") - pl.col("own_ngram_nats")
    per_split = part.group_by("split").agg(
        (gap.sum() / pl.col("model_targets").sum()).alias("difference"), pl.len().alias("bouts")
    )
    by_split = {int(s): (float(d), int(n)) for s, d, n in per_split.iter_rows()}
    # a bout scored by several splits counts once: its sums averaged over them; sorted,
    # since the bootstrap's draws index bouts (the same interval every run)
    bouts = (
        part.group_by("entity")
        .agg(pl.col(*MODEL_SUMS, *OWN_SUMS).mean(), pl.len().alias("scored"))
        .sort("entity")
    )
    sums = {
        "model": bouts.select(MODEL_SUMS).to_numpy(),
        OWN_NGRAM: bouts.select(OWN_SUMS).to_numpy(),
    }
    comparison = compare_unit_sums(sums, "model", unit="bout", options=options)[0]
    return {
        "group": group,
        "condition": condition,
        "bouts": bouts.height,
        "bout_scorings": int(bouts["scored"].sum()),
        "targets": comparison.metrics["cross_entropy"].tokens,
        "verdict": comparison.verdict,
        "sentence": comparison.sentence(),
        "metrics": {k: _metric_dict(m) for k, m in comparison.metrics.items()},
        "per_split": [
            {"split": s, "difference": by_split[s][0], "bouts": by_split[s][1]}
            if s in by_split
            else {"split": s, "difference": None, "bouts": 0}
            for s in range(splits)
        ],
    }


def _metric_dict(metric: MetricDifference) -> dict[str, Any]:
    return {
        "model": metric.model,
        "own_ngram": metric.baseline,
        "difference": metric.difference,
        "ci_low": metric.low,
        "ci_high": metric.high,
        "verdict": metric.verdict,
    }


def lesion_across_splits(
    folders: Sequence[str | Path],
    out: str | Path,
    options: ComparisonOptions | None = None,
    progress: Progress | None = None,
) -> tuple[SplitsResult, dict[str, Path]]:
    """Score each `seqlm lesion` folder again and pool them (module docstring); writes
    `lesion_splits.json` and `lesion_splits.png` into `out` (locked meanwhile)."""
    inputs = [lesion_inputs(folder) for folder in folders]
    corpora = [corpus.resolve() for corpus, _, _ in inputs]
    repeated = sorted({str(c) for c in corpora if corpora.count(c) > 1})
    if repeated:
        raise ConfigError(f"two lesion folders score the same corpus (split): {repeated[0]}")
    with output_lock(output_folder(out), "seqlm lesion-splits"):
        for name in (RESULT_FILE, PLOT_FILE):  # never over a file seqlm did not write
            output_file(Path(out) / name)
        scored = [split_bouts(f, i, progress) for f, i in zip(folders, inputs, strict=True)]
        result = SplitsResult(
            rows=pool_bouts([bouts for bouts, _ in scored], options),
            splits=[about for _, about in scored],
        )
        return result, write_splits_report(result, out)


def same_split_settings(result: SplitsResult) -> list[str]:
    """Warnings for splits drawn with the same settings (the same seed twice)."""
    seen: dict[str, str] = {}
    lines = []
    for about in result.splits:
        key = json.dumps(about["splits"], sort_keys=True)
        if key in seen:
            lines.append(
                f"warning: {about['lesion']} and {seen[key]} were split with the same "
                "settings; if they hold the same data, their bouts are counted as one"
            )
        seen.setdefault(key, about["lesion"])
    return lines


def write_splits_report(result: SplitsResult, folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pre = result.splits[0]["pre"] if result.splits else LesionOptions.pre
    png = splits_plot(result.rows, len(result.splits), pre, folder / PLOT_FILE)
    payload = {
        "rule": "seqlm.studies.lesion_splits (pooled over splits, resampled by bout)",
        "splits": result.splits,
        "rows": result.rows,
        "plot": png.name,
    }
    path = folder / RESULT_FILE
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return {"json": path, "plot": png}


def splits_table(result: SplitsResult, condition: str | None = None) -> Table:
    """One row per group for one condition (the pre-lesion one by default): each split's
    difference, the pooled difference with its interval, the verdict."""
    condition = condition or (result.splits[0]["pre"] if result.splits else LesionOptions.pre)
    table = Table(
        title=f"model minus its own n-gram, held-out {condition} (nats per target)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("group")
    table.add_column("bouts", justify="right")
    for number in range(len(result.splits)):
        table.add_column(f"split {number + 1}", justify="right")
    table.add_column("pooled [95% CI]", justify="right")
    table.add_column("model is")
    for row in (r for r in result.rows if r["condition"] == condition):
        ce = row["metrics"]["cross_entropy"]
        each = _per_split_texts(row)
        pooled = f"{ce['difference']:+.4f} [{ce['ci_low']:+.4f}, {ce['ci_high']:+.4f}]"
        bold = "bold" if row["group"] == ALL_GROUPS else None
        table.add_row(row["group"], f"{row['bouts']:,}", *each, pooled, row["verdict"], style=bold)
    table.caption = "splits in the order given; bouts: distinct bouts, each counted once"
    return table


def _per_split_texts(row: dict[str, Any]) -> list[str]:
    return ["-" if s["difference"] is None else f"{s['difference']:+.4f}" for s in row["per_split"]]


def splits_lines(result: SplitsResult) -> list[str]:
    """One sentence per (group, condition): the pooled comparison and each split's
    point estimate."""
    lines = []
    for row in result.rows:
        each = ", ".join(_per_split_texts(row))
        lines.append(
            f"[{row['group']}, {row['condition']}] {row['sentence']}; "
            f"{row['bout_scorings']:,} scorings; per split {each}"
        )
    return lines + same_split_settings(result)


def few_bouts_lines(bouts: pl.DataFrame | None, pre: str, minimum: int = FEW_BOUTS) -> list[str]:
    """For `seqlm lesion`: a note per group with fewer than `minimum` held-out pre-lesion
    bouts, whose one-split interval is too wide to settle small differences."""
    if bouts is None:
        return []
    counts = bouts.filter(pl.col("condition") == pre).group_by("group").len().sort("group")
    return [
        f"note: {group} has {n} held-out bouts in this split; its interval is wide and "
        "moves with which bouts were held out. Ingest again with other split seeds "
        "(--option splits.seed=S), run seqlm lesion on each, and pool them with "
        "`seqlm lesion-splits`"
        for group, n in counts.iter_rows()
        if n < minimum
    ]
