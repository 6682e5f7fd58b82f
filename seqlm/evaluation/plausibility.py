"""Would a clinician accept these trajectories? Plausibility measures of MEDS rows, for
generated trajectories beside real ones rebuilt through the same tokens -> rows path.

Every measure reads a frame of MEDS rows (`subject_id, time, code, numeric_value,
text_value`, in each subject's token order) with a boolean `scored` column: scored rows
are the ones measured (the generated part, or the real continuation of the same prefix);
the others are context (the prompt), so a generated lab that repeats a prompt lab at the
same time still counts, and a discharge may close an admission made in the prompt.

- same-time repeats: scored rows (with a time, and a code that is not a merged unknown
  like `LAB//[UNK]`) whose (subject, time, code) an earlier row already has; conflicting
  ones differ in value from that group's first row. Shares of scored rows, over all
  kinds and per kind (LAB is the one the issue counted).
- unopened closes: scored closing events (`ICU_DISCHARGE`) with no open event of their
  pair at that row (`plausibility_rules` says which kinds pair and how), per closing
  event.
- static rows outside the prefix: scored rows of a static kind (GENDER, AGE) with a time,
  i.e. written mid-trajectory; per scored row.
- values outside the reference range: scored numeric values outside [p1, p99] of the
  reference rows of their code (the train split, rebuilt the same way). Values are bin
  centres on both sides, so this counts draws of the extreme bins, not invented values.
- time gaps: the steps between consecutive distinct times of a subject that end at a
  scored row; median and 90th percentile in hours, and the two-sample Kolmogorov-Smirnov
  distance between the generated and the real gaps.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from seqlm.evaluation.plausibility_rules import UNKNOWN_MARK, paired_kinds

SECONDS_PER_HOUR = 3600.0
STATIC_EXEMPT_CODES = frozenset({"MEDS_BIRTH"})  # written with a time from the AGE token


@dataclass(frozen=True)
class SideMeasures:
    """The measures of one side (generated or real)."""

    scored_rows: int
    repeats: dict[str, tuple[int, int, int]]  # kind ("all" too): (rows, repeats, conflicting)
    closes: dict[str, tuple[int, int]]  # pair ("all" too): (closing rows, unopened)
    static_outside: int
    values: tuple[int, int]  # (numeric values, outside the reference [p1, p99])
    gaps_s: np.ndarray

    def to_dict(self) -> dict[str, object]:
        return {
            "scored_rows": self.scored_rows,
            "repeats": {
                k: dict(zip(("rows", "repeats", "conflicting"), v, strict=True))
                for k, v in self.repeats.items()
            },
            "closes": {
                k: dict(zip(("closes", "unopened"), v, strict=True)) for k, v in self.closes.items()
            },
            "static_outside_prefix": self.static_outside,
            "values": dict(zip(("values", "outside_p1_p99"), self.values, strict=True)),
            "time_gap_hours": _gap_summary(self.gaps_s),
        }


def _gap_summary(gaps_s: np.ndarray) -> dict[str, float | int | None]:
    if gaps_s.size == 0:
        return {"count": 0, "median": None, "p90": None}
    hours = gaps_s / SECONDS_PER_HOUR
    return {
        "count": int(hours.size),
        "median": float(np.median(hours)),
        "p90": float(np.quantile(hours, 0.9)),
    }


def _prepared(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows with their order, kind and whether the code is a merged unknown (the rules
    of `plausibility_rules.code_kind` and `is_unknown_code`, as polars expressions)."""
    code = pl.col("code")
    return rows.with_row_index("row").with_columns(
        code.str.split("//").list.first().alias("kind"),  # plausibility_rules.code_kind
        ((code == UNKNOWN_MARK) | code.str.ends_with("//" + UNKNOWN_MARK)).alias("unknown"),
    )


def same_time_repeats(rows: pl.DataFrame) -> dict[str, tuple[int, int, int]]:
    """{kind: (scored rows, repeats, conflicting repeats)}, with "all" over every kind."""
    frame = _prepared(rows).filter(pl.col("time").is_not_null() & ~pl.col("unknown"))
    group = ["subject_id", "time", "code"]
    frame = frame.sort("row").with_columns(
        (pl.int_range(pl.len()).over(group) > 0).alias("repeat"),
        (
            pl.col("numeric_value").ne_missing(pl.col("numeric_value").first().over(group))
            | pl.col("text_value").ne_missing(pl.col("text_value").first().over(group))
        ).alias("differs"),
    )
    scored = frame.filter(pl.col("scored"))
    per_kind = scored.group_by("kind").agg(
        pl.len().alias("rows"),
        pl.col("repeat").sum().alias("repeats"),
        (pl.col("repeat") & pl.col("differs")).sum().alias("conflicting"),
    )
    out = {kind: (int(n), int(r), int(c)) for kind, n, r, c in per_kind.sort("kind").iter_rows()}
    out["all"] = tuple(sum(v[i] for v in out.values()) for i in range(3))  # type: ignore[assignment]
    return out


def unopened_closes(rows: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """{pair name: (scored closing rows, unopened ones)}, with "all" over every pair."""
    frame = _prepared(rows)
    pairs = paired_kinds(frame["kind"].unique().to_list())
    out: dict[str, tuple[int, int]] = {}
    for pair in pairs:
        events = frame.filter(pl.col("kind").is_in([pair.opens, pair.closes])).sort("row")
        open_count: dict[int, int] = {}
        closes = unopened = 0
        for subject, kind, scored in events.select("subject_id", "kind", "scored").iter_rows():
            held = open_count.get(subject, 0)
            if kind == pair.opens:
                open_count[subject] = held + 1
                continue
            closes += int(scored)
            unopened += int(scored and held == 0)
            open_count[subject] = max(held - 1, 0)
        out[pair.name] = (closes, unopened)
    out["all"] = (sum(v[0] for v in out.values()), sum(v[1] for v in out.values()))
    return out


def static_outside_prefix(rows: pl.DataFrame, static_kinds: Collection[str]) -> int:
    """Scored rows of a static kind written with a time (mid-trajectory)."""
    frame = _prepared(rows)
    return frame.filter(
        pl.col("scored")
        & pl.col("time").is_not_null()
        & pl.col("kind").is_in(list(static_kinds))
        & ~pl.col("code").is_in(list(STATIC_EXEMPT_CODES))
    ).height


def value_ranges(reference: pl.DataFrame) -> pl.DataFrame:
    """Per code: p1 and p99 of the numeric values of the reference rows."""
    return (
        reference.filter(pl.col("numeric_value").is_not_null())
        .group_by("code")
        .agg(
            pl.col("numeric_value").quantile(0.01, "linear").alias("p1"),
            pl.col("numeric_value").quantile(0.99, "linear").alias("p99"),
        )
    )


def values_outside(rows: pl.DataFrame, ranges: pl.DataFrame) -> tuple[int, int]:
    """(scored numeric values of codes with a reference range, those outside it)."""
    values = rows.filter(pl.col("scored") & pl.col("numeric_value").is_not_null())
    joined = values.join(ranges, on="code", how="inner")
    outside = joined.filter(
        (pl.col("numeric_value") < pl.col("p1")) | (pl.col("numeric_value") > pl.col("p99"))
    )
    return joined.height, outside.height


def time_gaps_seconds(rows: pl.DataFrame) -> np.ndarray:
    """Seconds between consecutive distinct times of each subject, for the steps that end
    at a scored row's time (a time a context row also has is not a new step)."""
    timed = rows.filter(pl.col("time").is_not_null())
    steps = (
        timed.group_by("subject_id", "time")
        .agg(pl.col("scored").all().alias("scored"))
        .sort("subject_id", "time")
        .with_columns(
            (pl.col("time") - pl.col("time").shift(1).over("subject_id"))
            .dt.total_microseconds()
            .alias("gap_us")
        )
    )
    gaps = steps.filter(pl.col("scored") & pl.col("gap_us").is_not_null())["gap_us"]
    return gaps.to_numpy().astype(np.float64) / 1e6


def ks_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical
    CDFs); None when a side is empty."""
    if a.size == 0 or b.size == 0:
        return None
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def measure(
    rows: pl.DataFrame, static_kinds: Collection[str], ranges: pl.DataFrame
) -> SideMeasures:
    """Every measure of one side's rows (module docstring)."""
    return SideMeasures(
        scored_rows=int(rows["scored"].sum()),
        repeats=same_time_repeats(rows),
        closes=unopened_closes(rows),
        static_outside=static_outside_prefix(rows, static_kinds),
        values=values_outside(rows, ranges),
        gaps_s=time_gaps_seconds(rows),
    )


def mark_scored(rows: pl.DataFrame, context_rows: Mapping[int, int]) -> pl.DataFrame:
    """`rows` with `scored` False for the first `context_rows[subject]` rows of each
    subject (0 for a subject not in the mapping)."""
    context = pl.DataFrame(
        {"subject_id": list(context_rows), "context": list(context_rows.values())},
        schema={"subject_id": pl.Int64, "context": pl.Int64},
    )
    return (
        rows.join(context, on="subject_id", how="left", maintain_order="left")
        .with_columns(
            (pl.int_range(pl.len()).over("subject_id") >= pl.col("context").fill_null(0)).alias(
                "scored"
            )
        )
        .drop("context")
    )
