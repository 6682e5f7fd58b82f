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

import numpy as np
import polars as pl

# The counts `merge_checks` returns (each adds up over disjoint sets of entities).
MERGE_CHECK_COUNTS = (
    "duplicate_events",
    "entities_with_duplicates",
    "time_restarts",
    "entities_with_time_restarts",
)
# The step between (entity, time) runs in a row's key, over any code id (below 2**32,
# a null code 2**32).
RUN_STEP = 2**32 + 1


def merge_checks(rows: pl.DataFrame) -> dict[str, Any]:
    """Counts of duplicate (entity, time, code) rows and of time restarts per entity.

    `rows` are in sequence order: each entity's rows together, by (time, order) with
    static (null-time) rows first. That order makes both counts cheap: duplicates can
    only sit in runs of rows sharing (entity, time), so a row repeats an earlier one
    where its (run, code) is not the first of its value (one integer key, no grouping),
    and an entity whose `order` rises with its time cannot restart, so only the other
    entities are regrouped by `order`.
    """
    entity, time, order = pl.col("entity"), pl.col("time"), pl.col("order")
    same_entity = entity.eq_missing(entity.shift(1))
    same_time = same_entity & time.eq(time.shift(1)).fill_null(False)
    # Category ids are below 2**32: a null code takes 2**32.
    code = pl.col("code").cast(pl.Categorical).to_physical().cast(pl.UInt64).fill_null(2**32)
    flags = rows.select(
        entity,
        # A row sharing (entity, time) with a neighbour: the only possible duplicates.
        ((same_time | same_time.shift(-1).fill_null(False)) & time.is_not_null()).alias("shared"),
        # The (entity, time) run (numbered from 1) and the code in one key.
        ((~same_time).cum_sum().cast(pl.UInt64) * RUN_STEP + code).alias("key"),
        # `order` falling within an entity: the only entities that can restart.
        (same_entity & (order < order.shift(1)).fill_null(True)).alias("back"),
        (~same_time).alias("new_run"),
    )
    duplicates, entities = _duplicates(flags)
    back = flags.filter(pl.col("back"))["entity"].unique().implode()
    restarts = (
        rows.lazy()
        .filter(entity.is_in(back) & time.is_not_null())
        .group_by("entity")
        .agg(_restarts(time.sort_by("order")).alias("restarts"))
        .filter(pl.col("restarts") > 0)
        .collect()
    )
    return {
        "duplicate_events": duplicates,
        "entities_with_duplicates": entities,
        "time_restarts": int(restarts["restarts"].sum()),
        "entities_with_time_restarts": restarts.height,
    }


def _duplicates(flags: pl.DataFrame) -> tuple[int, int]:
    """(rows that repeat an earlier row's key, entities holding such rows) of the
    `merge_checks` flags: from the shared rows' keys sorted (a numpy sort of one
    integer column cost a third of polars' hash set of first-seen keys), so that
    equal keys are neighbours; each repeated key's entity is its run's."""
    keys = np.sort(flags.filter(pl.col("shared"))["key"].to_numpy())
    repeated = keys[1:][keys[1:] == keys[:-1]]
    if not repeated.size:
        return 0, 0
    run_entity = flags.filter(pl.col("new_run"))["entity"]
    runs = pl.Series(repeated // RUN_STEP - 1, dtype=pl.UInt64)
    return int(repeated.size), run_entity.gather(runs).n_unique()


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
