"""The entity table: one row per entity with its group, source split, attributes, event
count and first/last time, merged from per-partition aggregates and checked."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from seqlm.errors import InputError


def entity_aggregates(events: pl.LazyFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """Per entity (sorted by name): entity-level columns, `_n_<column>` distinct-value
    counts for the constancy check, event count and first/last time. Unchecked, so that
    aggregates of partitions holding different entities can be concatenated first."""
    return (
        events.group_by("entity")
        .agg(_aggregations(attributes))
        .collect(engine="streaming")
        .sort("entity")
    )


def run_aggregates(rows: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """`entity_aggregates` of rows whose entities are each in one run, in the order of
    the runs: grouped by run ids (integers, runs in order) instead of hashing names.
    An integer `entity` (MEDS subject ids) is named here, once per entity: its decimal
    string."""
    run = pl.col("entity").rle_id().alias("_run")
    return (
        rows.group_by(run, maintain_order=True)
        .agg(pl.col("entity").first(), *_aggregations(attributes))
        .drop("_run")
        .with_columns(pl.col("entity").cast(pl.String))
    )


def _aggregations(attributes: Sequence[str]) -> list[pl.Expr]:
    constant = ["group", "split", *attributes]
    return [
        # `min`, not `first`: order-free aggregations let polars drop the events'
        # sort and stream this pass in bounded memory.
        *[pl.col(c).min().alias(c) for c in constant],
        *[pl.col(c).drop_nulls().n_unique().alias(f"_n_{c}") for c in constant],
        pl.len().cast(pl.Int64).alias("n_events"),
        pl.col("time").min().alias("first_time"),
        pl.col("time").max().alias("last_time"),
    ]


def checked_entities(frame: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """`entity_aggregates` rows (of all partitions) checked: no null entity, entity-level
    columns constant per entity; `split` renamed `source_split`."""
    constant = ["group", "split", *attributes]
    if frame["entity"].null_count():
        raise InputError("events with no entity", column="entity")
    for column in constant:
        conflict = frame.filter(pl.col(f"_n_{column}") > 1)
        if conflict.height:
            raise InputError(
                f"{conflict.height} entities have more than one {column!r} value "
                f"(e.g. entity {conflict['entity'][0]!r}); it must be constant per entity",
                column=column,
            )
    return frame.drop([f"_n_{c}" for c in constant]).rename({"split": "source_split"})


def entity_table(events: pl.LazyFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """One row per entity (sorted by name), checked, from one streaming pass."""
    return checked_entities(entity_aggregates(events, attributes), attributes)
