"""Corpus attention statistics as long tables (parquet and CSV) and a JSON summary.

Three tables, one row per (layer, head[, bin]):

- `attention_by_distance`: layer, head, bin_start, bin_stop (token distances
  [start, stop); the last bin stops at the context length), mass (mean over counted
  queries of the attention mass in the bin), uniform_mass (the same for attention spread
  evenly over the visible data keys), queries (how many queries were averaged);
- `attention_by_time` (corpora with times): the same by elapsed seconds, bin_stop_s
  = inf for the open last bin, and a readable `bin` label;
- `attention_heads`: mean distance beside its uniform baseline, entropy (nats) and
  normalised entropy, mass beyond each distance k, sink mass, and by time the mean
  elapsed seconds beside its uniform baseline and mass beyond each duration.

Every table ends with `query_rows`: which query rows were averaged, in words ("all
125,607 data query rows", or "only 256 of 125,607 data query rows (next token in
{W,X,Z,V})" under a query-row filter), so a filtered figure read from the CSV alone is
not taken for the whole split's. The JSON summary has `counted_queries` and
`query_filter` too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.analysis.corpus_stats import EXCLUSION_NOTE, CorpusAttentionStatistics
from seqlm.analysis.stats_bins import format_time
from seqlm.errors import CorpusError

TABLE_NAMES = ("attention_by_distance", "attention_by_time", "attention_heads")
SUMMARY_FILE = "attention_stats.json"


def _queries(stats: CorpusAttentionStatistics, layer: int) -> int:
    distance = stats.layers[layer].distance
    return 0 if distance is None else int(distance.queries)


def distance_table(stats: CorpusAttentionStatistics) -> pl.DataFrame:
    """Long form by token distance: layer, head, bin_start, bin_stop, mass, uniform_mass,
    queries."""
    edges = list(stats.distance_edges)
    stops = [*edges[1:], stats.context]
    records = []
    for layer, sums in stats.layers.items():
        queries = _queries(stats, layer)
        if sums.distance is None:
            continue
        histogram = sums.distance.distance_histogram.numpy()
        uniform = sums.uniform_distance_mass_sum / max(queries, 1)
        for head in range(stats.n_heads):
            for index, (start, stop) in enumerate(zip(edges, stops, strict=True)):
                records.append(
                    (layer, head, start, stop, histogram[head, index], uniform[index], queries)
                )
    table = pl.DataFrame(
        records,
        schema={
            "layer": pl.Int64,
            "head": pl.Int64,
            "bin_start": pl.Int64,
            "bin_stop": pl.Int64,
            "mass": pl.Float64,
            "uniform_mass": pl.Float64,
            "queries": pl.Int64,
        },
        orient="row",
    )
    return _with_rows_note(table, stats)


def time_table(stats: CorpusAttentionStatistics) -> pl.DataFrame | None:
    """Long form by elapsed seconds, or None when the corpus has no times."""
    if stats.time_edges is None:
        return None
    edges = list(stats.time_edges)
    stops = [*edges[1:], math.inf]
    unit = stats.time_unit
    labels = [
        f"{format_time(a, unit)} – {format_time(b, unit)}"
        if math.isfinite(b)
        else f"≥ {format_time(a, unit)}"
        for a, b in zip(edges, stops, strict=True)
    ]
    records = []
    for layer, sums in stats.layers.items():
        queries = _queries(stats, layer)
        if sums.time is None:
            continue
        mass = sums.time.mass_sum / max(queries, 1)
        uniform = sums.time.uniform_mass_sum / max(queries, 1)
        for head in range(stats.n_heads):
            for index, (start, stop) in enumerate(zip(edges, stops, strict=True)):
                records.append(
                    (
                        layer,
                        head,
                        start,
                        stop,
                        labels[index],
                        mass[head, index],
                        uniform[index],
                        queries,
                    )
                )
    table = pl.DataFrame(
        records,
        schema={
            "layer": pl.Int64,
            "head": pl.Int64,
            "bin_start_s": pl.Float64,
            "bin_stop_s": pl.Float64,
            "bin": pl.String,
            "mass": pl.Float64,
            "uniform_mass": pl.Float64,
            "queries": pl.Int64,
        },
        orient="row",
    )
    return _with_rows_note(table, stats)


def _with_rows_note(table: pl.DataFrame, stats: CorpusAttentionStatistics) -> pl.DataFrame:
    """`table` with the `query_rows` column (which query rows were averaged)."""
    return table.with_columns(pl.lit(stats.rows_note(), dtype=pl.String).alias("query_rows"))


def _seconds_column(seconds: float, unit: str = "s") -> str:
    """`mass_beyond_30d`, `mass_beyond_300ms` (`mass_beyond_8` for index time): the
    readable label without spaces."""
    return "mass_beyond_" + format_time(seconds, unit).replace(" ", "")


def head_table(stats: CorpusAttentionStatistics) -> pl.DataFrame:
    """One row per (layer, head): the scalar statistics (see module doc)."""
    beyond = stats.options.beyond_distances
    columns: dict[str, list] = {
        "layer": [],
        "head": [],
        "queries": [],
        "mean_distance": [],
        "uniform_mean_distance": [],
        "entropy": [],
        "normalized_entropy": [],
        **{f"mass_beyond_{k}": [] for k in beyond},
        "sink_mass": [],
    }
    if stats.has_times:
        columns["mean_elapsed_s"] = []
        columns["uniform_mean_elapsed_s"] = []
        for seconds in stats.options.beyond_seconds:
            columns[_seconds_column(seconds, stats.time_unit)] = []
    for layer, sums in stats.layers.items():
        distance = sums.distance
        if distance is None:
            continue
        queries = max(distance.queries, 1)
        for head in range(stats.n_heads):
            columns["layer"].append(layer)
            columns["head"].append(head)
            columns["queries"].append(distance.queries)
            columns["mean_distance"].append(float(distance.mean_distance[head]))
            columns["uniform_mean_distance"].append(float(distance.uniform_mean_distance))
            columns["entropy"].append(float(distance.entropy[head]))
            columns["normalized_entropy"].append(float(distance.normalized_entropy[head]))
            for index, k in enumerate(beyond):
                columns[f"mass_beyond_{k}"].append(float(distance.mass_beyond[head, index]))
            columns["sink_mass"].append(float(sums.sink_mass_sum[head] / queries))
            if stats.has_times and sums.time is not None:
                columns["mean_elapsed_s"].append(float(sums.time.elapsed_sum[head] / queries))
                columns["uniform_mean_elapsed_s"].append(sums.time.uniform_elapsed_sum / queries)
                for index, seconds in enumerate(stats.options.beyond_seconds):
                    value = float(sums.time.beyond_sum[head, index] / queries)
                    columns[_seconds_column(seconds, stats.time_unit)].append(value)
    return _with_rows_note(pl.DataFrame(columns), stats)


def summary(stats: CorpusAttentionStatistics) -> dict:
    """Plain values describing the run of statistics (written as attention_stats.json)."""
    options = stats.options
    return {
        "split": options.split,
        "sequences": stats.sequences,
        "windows": stats.windows,
        "data_queries": stats.queries,
        # Every figure averages over these rows: all data queries, or under a query-row
        # filter only those it kept (query_filter).
        "counted_queries": stats.counted_queries,
        "query_filter": (
            {"queries": list(options.query_tokens), "query_targets": list(options.query_targets)}
            if options.filtered
            else None
        ),
        "query_rows": stats.rows_note(),
        "context": stats.context,
        "layers": sorted(stats.layers),
        "heads": stats.n_heads,
        "distance_edges": list(stats.distance_edges),
        "beyond_distances": list(options.beyond_distances),
        "time_edges_s": None if stats.time_edges is None else list(stats.time_edges),
        # Columns and keys ending in _s hold the corpus's time unit: seconds, or unitless
        # positions (beats, steps) when this is "index".
        "time_unit": stats.time_unit,
        "beyond_seconds": list(options.beyond_seconds),
        "max_sequences": options.max_sequences,
        "excluded": EXCLUSION_NOTE,
    }


def write_statistics(stats: CorpusAttentionStatistics, out: str | Path) -> dict[str, Path]:
    """Write each table as parquet and CSV plus `attention_stats.json` into `out`.

    Returns {name: path} for every file written (`<table>.parquet`, `<table>.csv`,
    `summary`).
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CorpusError(f"{out}: cannot create the output folder: {err}") from None
    written: dict[str, Path] = {}
    tables = {
        "attention_by_distance": distance_table(stats),
        "attention_by_time": time_table(stats),
        "attention_heads": head_table(stats),
    }
    for name, table in tables.items():
        if table is None:
            continue
        for suffix in ("parquet", "csv"):
            path = out / f"{name}.{suffix}"
            if suffix == "parquet":
                table.write_parquet(path)
            else:
                table.write_csv(path)
            written[f"{name}.{suffix}"] = path
    path = out / SUMMARY_FILE
    path.write_text(json.dumps(summary(stats), indent=2) + "\n", encoding="utf-8")
    written["summary"] = path
    return written


def mass_density(table: pl.DataFrame, start: str, stop: str) -> pl.DataFrame:
    """Add `density` and `uniform_density`: mass per unit of bin width (per token or per
    second), so bins of different widths compare on one axis. Open bins get NaN."""
    width = pl.col(stop) - pl.col(start)
    finite = width.is_finite() if table.schema[stop] == pl.Float64 else pl.lit(True)
    return table.with_columns(
        pl.when(finite).then(pl.col("mass") / width).otherwise(np.nan).alias("density"),
        pl.when(finite)
        .then(pl.col("uniform_mass") / width)
        .otherwise(np.nan)
        .alias("uniform_density"),
    )
