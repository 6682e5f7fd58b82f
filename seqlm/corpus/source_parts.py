"""Partitions taken from the way the source stores its events instead of hashed.

MEDS shards each hold whole subjects, sorted by (subject, time) (MEDS-Extract writes
them so): used as the build's partitions, they need no partition stage (a hash, a
write and a read of every row), no splitting of spill files, and mostly no sort (the
sort stage finds their rows in sequence order and keeps them). The adapter offers them
(`Ingested.source_parts`); the builder groups small consecutive ones, reads each
group in one task, and checks afterwards that no entity is in two groups. When one is
(shards split by time, not by subject), or a part is too large to hold in memory, it
hashes the events into partitions as for any other source: the corpus is the same
either way (tests/corpus/test_source_parts.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from seqlm.corpus.partitions import PartitionPaths, Sorted, sort_rows

# Rows per partition: a partition is sorted and encoded in memory (about 0.3 GB at
# 500k MEDS rows); the number of partitions does not change the cost per row. The
# MEDS adapter cuts larger shards into pieces of as many rows (SHARD_PIECE_ROWS).
DEFAULT_ROWS_PER_BUCKET = 500_000
# A source part over this many partitions' rows is not read whole (memory): the
# builder hashes the events instead.
MAX_PART_BUCKETS = 2


def source_groups(sizes: Sequence[int], rows_per_bucket: int) -> list[list[int]] | None:
    """Consecutive source parts (their input rows: `sizes`) grouped into partitions of
    at most `rows_per_bucket` rows (a larger part alone); None when there are none or one
    is over `MAX_PART_BUCKETS` partitions' rows."""
    if not sizes or max(sizes) > MAX_PART_BUCKETS * rows_per_bucket:
        return None
    groups: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for number, size in enumerate(sizes):
        if current and rows + size > rows_per_bucket:
            groups.append(current)
            current, rows = [], 0
        current.append(number)
        rows += size
    groups.append(current)
    return groups


def sort_source_part(
    part: PartitionPaths,
    frames: Sequence[pl.LazyFrame],
    attributes: Sequence[str],
    sample_size: int = 0,
    cuts: pl.DataFrame | None = None,
) -> Sorted:
    """`sort_partition` for a partition made of source parts (read here, in the worker)."""
    rows = pl.concat(list(frames), how="vertical").collect()
    return sort_rows(part, rows, attributes, sample_size, cuts)


def sort_read_part(
    part: PartitionPaths,
    reads: Sequence[Callable[[], tuple[pl.DataFrame, pl.DataFrame]]],
    attributes: Sequence[str],
    sample_size: int = 0,
    cuts: pl.DataFrame | None = None,
) -> tuple[Sorted, pl.DataFrame]:
    """`sort_source_part` for parts read by the adapter's `Ingested.source_reads`
    (called here, in the worker): also their rejects, in part order."""
    read = [function() for function in reads]
    rows = _concat_events([events for events, _ in read])
    rejects = pl.concat([rejected for _, rejected in read], how="vertical")
    return sort_rows(part, rows, attributes, sample_size, cuts), rejects


def _concat_events(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The parts' events as one frame; their `entity` columns as names (strings) where
    the parts differ in its type (integer ids in one, text or another width in another:
    `Ingested.source_reads` may give integer ids)."""
    if len({frame.schema["entity"] for frame in frames}) > 1:
        frames = [frame.with_columns(pl.col("entity").cast(pl.String)) for frame in frames]
    return pl.concat(frames, how="vertical")


def entity_in_two_parts(aggregates: Sequence[pl.DataFrame]) -> bool:
    """Whether an entity appears in the aggregates of two partitions (so the source's
    parts do not hold whole entities and the build must hash instead)."""
    found = [a.select("entity") for a in aggregates if a.height]
    if not found:
        return False
    names = pl.concat(found)["entity"].drop_nulls()
    return names.len() != names.n_unique()
