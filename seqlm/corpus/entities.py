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
    constant = ["group", "split", *attributes]
    return (
        events.group_by("entity")
        .agg(
            # `min`, not `first`: order-free aggregations let polars drop the events'
            # sort and stream this pass in bounded memory.
            *[pl.col(c).min().alias(c) for c in constant],
            *[pl.col(c).drop_nulls().n_unique().alias(f"_n_{c}") for c in constant],
            pl.len().cast(pl.Int64).alias("n_events"),
            pl.col("time").min().alias("first_time"),
            pl.col("time").max().alias("last_time"),
        )
        .collect(engine="streaming")
        .sort("entity")
    )


def partial_entity_aggregates(events: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """Mergeable per-entity aggregates of any chunk of rows (an entity may span chunks):
    min and max of each entity-level column, count, first and last time. Merge chunks
    with `merge_entity_aggregates`; `finish_entity_aggregates` gives the
    `entity_aggregates` columns (a column is constant iff its min equals its max)."""
    constant = ["group", "split", *attributes]
    return events.group_by("entity").agg(
        *[pl.col(c).min().alias(f"_min_{c}") for c in constant],
        *[pl.col(c).max().alias(f"_max_{c}") for c in constant],
        pl.len().cast(pl.Int64).alias("n_events"),
        pl.col("time").min().alias("first_time"),
        pl.col("time").max().alias("last_time"),
    )


def merge_entity_aggregates(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Partial aggregates of different chunks as one (one row per entity)."""
    frame = pl.concat(parts)
    mins = [c for c in frame.columns if c.startswith("_min_")]
    maxes = [c for c in frame.columns if c.startswith("_max_")]
    return frame.group_by("entity").agg(
        *[pl.col(c).min() for c in mins],
        *[pl.col(c).max() for c in maxes],
        pl.col("n_events").sum(),
        pl.col("first_time").min(),
        pl.col("last_time").max(),
    )


def finish_entity_aggregates(frame: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """Merged partial aggregates in the form `checked_entities` takes, sorted by entity."""
    constant = ["group", "split", *attributes]
    return frame.select(
        "entity",
        *[pl.col(f"_min_{c}").alias(c) for c in constant],
        *[
            pl.when(pl.col(f"_min_{c}") != pl.col(f"_max_{c}"))
            .then(2)
            .when(pl.col(f"_min_{c}").is_null())
            .then(0)
            .otherwise(1)
            .cast(pl.UInt32)
            .alias(f"_n_{c}")
            for c in constant
        ],
        "n_events",
        "first_time",
        "last_time",
    ).sort("entity")


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
