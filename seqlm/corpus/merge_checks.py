"""Signs that one entity holds several streams merged into one sequence.

An entity whose time runs back to its start (several chorales under one catalogue
number, beats restarting at 0; a recording re-used for several sessions) is sorted by
time into one interleaved sequence without any error. Two counts make that visible in
the ingest summary and in `seqlm corpus info`:

- duplicate events: rows that repeat an earlier row's (entity, time, code);
- time restarts: events whose time is the entity's first time again after it had moved
  on, in the order the adapter read them (its `order` column: the input's row order
  unless the mapping names an order column).
"""

from __future__ import annotations

from typing import Any

import polars as pl

# The counts `merge_checks` returns (each adds up over disjoint sets of entities).
MERGE_CHECK_COUNTS = (
    "duplicate_events",
    "entities_with_duplicates",
    "time_restarts",
    "entities_with_time_restarts",
)


def merge_checks(events: pl.LazyFrame) -> dict[str, Any]:
    """Counts of duplicate (entity, time, code) rows and of time restarts per entity."""
    timed = events.filter(pl.col("time").is_not_null())
    duplicates = (
        # Categorical codes: the grouping hashes integers.
        timed.group_by("entity", "time", pl.col("code").cast(pl.Categorical))
        .len()
        .filter(pl.col("len") > 1)
        .group_by("entity")
        .agg((pl.col("len") - 1).sum().alias("rows"))
        .collect(engine="streaming")
    )
    restarts = (
        timed.group_by("entity")
        .agg(_restarts(pl.col("time").sort_by("order")).alias("restarts"))
        .filter(pl.col("restarts") > 0)
        .collect()
    )
    return {
        "duplicate_events": int(duplicates["rows"].sum()),
        "entities_with_duplicates": duplicates.height,
        "time_restarts": int(restarts["restarts"].sum()),
        "entities_with_time_restarts": restarts.height,
    }


def _restarts(time: pl.Expr) -> pl.Expr:
    # An event at the entity's first time that follows a later one: the clock went back.
    start = time.min()
    return ((time == start) & (time.shift(1) > start)).sum()


def describe_merge_checks(checks: dict[str, Any]) -> list[str]:
    """`warning: ...` / `note: ...` lines for a summary; empty when nothing looks merged."""
    lines = []
    # Counts only: entity names can be identifiers (clinical subjects).
    if checks.get("time_restarts"):
        lines.append(
            f"warning: time runs back to its start {checks['time_restarts']:,} times in "
            f"{checks['entities_with_time_restarts']:,} entities: several "
            "streams may share one entity and were interleaved by time; choose a finer "
            "entity column (docs/mapping.md)"
        )
    if checks.get("duplicate_events"):
        lines.append(
            f"note: {checks['duplicate_events']:,} events repeat an earlier (entity, time, "
            f"code) in {checks['entities_with_duplicates']:,} entities (repeated measurements, "
            "or streams merged into one entity)"
        )
    return lines
