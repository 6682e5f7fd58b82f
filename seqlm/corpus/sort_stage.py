"""The first map stage of `build_corpus` and its reduce: the events put into partitions
that hold whole entities (the source's own parts, else hashed into spill files), each
sorted into sequence order, then the entity table, the row check and the splits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.corpora_adapters.base import REJECT_SCHEMA, Ingested
from seqlm.corpus.empty_ingest import no_events_message
from seqlm.corpus.entities import checked_entities
from seqlm.corpus.merge_checks import MERGE_CHECK_COUNTS
from seqlm.corpus.partitions import (
    PartitionPaths,
    sort_partition,
    spill_files,
    spill_partitions,
    split_spill,
)
from seqlm.corpus.source_parts import entity_in_two_parts, sort_read_part, sort_source_part
from seqlm.corpus.splits import SplitConfig, assign_splits
from seqlm.corpus.stages import StageClock
from seqlm.corpus.workers import WithLatest, run_map
from seqlm.errors import CorpusError
from seqlm.vocabularies.value_bins import ValueSampler

# Partitions, their entity aggregates, merge checks summed, and (given a sample size)
# the train value sample by the source's splits (None where a partition had none).
SortedParts = tuple[list[PartitionPaths], list[pl.DataFrame], dict[str, int], ValueSampler | None]


def sorted_partitions(
    pool: Any,
    work: Path,
    groups: list[list[int]] | None,
    events: pl.LazyFrame,
    n_parts: int,
    ingested: Ingested,
    attributes: Sequence[str],
    clock: StageClock,
    sample_size: int,
) -> tuple[SortedParts, bool, pl.DataFrame | None]:
    """The sort stage, with the adapter's source parts (`groups`) as the partitions
    where they hold whole entities, else the events hashed into `n_parts`; (its result,
    whether the partitions are the source's, the rejects where the sort read them:
    `folds_rejects`). `sample_size`: also sample train values by the source's splits
    (`partitions.source_train_sample`), 0 not to."""
    rejects = None
    if groups is not None:
        tasks = (pool, work, groups, ingested, attributes, clock, sample_size)
        done, rejects = sort_source_parts(*tasks)
        if done is not None:
            return done, True, rejects
    tasks = (events, work, n_parts, attributes, clock, ingested, sample_size)
    return partition_and_sort(pool, *tasks), False, rejects


def folds_rejects(ingested: Ingested, groups: list[list[int]] | None) -> bool:
    """Whether the sort stage reads the rejects with the events (the adapter's
    `source_reads`, used when the source parts are the partitions or tried as them)."""
    return groups is not None and 0 < len(ingested.source_reads) == len(ingested.source_parts)


def sort_source_parts(
    pool: Any,
    work: Path,
    groups: list[list[int]],
    ingested: Ingested,
    attributes: Sequence[str],
    clock: StageClock,
    sample_size: int = 0,
) -> tuple[SortedParts | None, pl.DataFrame | None]:
    """Sort the adapter's source parts (grouped) as the partitions, and their rejects
    where `folds_rejects` (else None); None for the parts (and nothing left behind)
    when an entity is in two groups, so that the caller hashes instead."""
    parts = [PartitionPaths(work, p) for p in range(len(groups))]
    folded = folds_rejects(ingested, groups)
    sources = ingested.source_reads if folded else [f for _, f in ingested.source_parts]
    tasks = [
        (p, [sources[i] for i in g], attributes, sample_size)
        for p, g in zip(parts, groups, strict=True)
    ]
    function = sort_read_part if folded else sort_source_part
    *result, rejects = _sorted(pool, function, tasks, clock, ingested.rows_read, sample_size)
    if entity_in_two_parts(result[0]):
        for part in parts:
            part.sorted_file.unlink(missing_ok=True)
        return None, rejects
    return (parts, *result), rejects  # type: ignore[return-value]


def partition_and_sort(
    pool: Any,
    events: pl.LazyFrame,
    work: Path,
    n_parts: int,
    attributes: Sequence[str],
    clock: StageClock,
    ingested: Ingested,
    sample_size: int = 0,
) -> SortedParts:
    """Hash the events into `n_parts` partitions (two levels beyond `SPILL_FILES`), then
    sort each."""
    with clock.stage("partitioning events", ingested.rows_read) as advance:
        spill_partitions(events, work, n_parts)
        advance(ingested.rows_read)
    n_spills = spill_files(n_parts)
    if n_spills < n_parts:
        with clock.stage("splitting spill files", ingested.rows_read):
            run_map(pool, split_spill, [(work, k) for k in range(n_spills)], _ignore)
    parts = [PartitionPaths(work, p) for p in range(n_parts)]
    tasks = [(p, attributes, sample_size) for p in parts]
    sorted_parts = _sorted(pool, sort_partition, tasks, clock, ingested.rows_read, sample_size)
    return (parts, *sorted_parts[:3])


def _sorted(
    pool: Any,
    function: Any,
    tasks: list[tuple[Any, ...]],
    clock: StageClock,
    rows: int,
    sample_size: int,
) -> tuple[list[pl.DataFrame], dict[str, int], ValueSampler | None, pl.DataFrame | None]:
    """Run a sort stage: each partition's entity aggregates, the summed merge checks,
    the merged train samples (None unless every partition gave one) and, where
    `function` gives them (`sort_read_part`), the partitions' rejects in order."""
    aggregates: list[pl.DataFrame] = [pl.DataFrame()] * len(tasks)
    rejects: list[pl.DataFrame] = []
    checks = dict.fromkeys(MERGE_CHECK_COUNTS, 0)
    sampler: list[ValueSampler | None] = [ValueSampler(sample_size) if sample_size else None]

    def done(i: int, result: Any) -> None:
        if function is sort_read_part:
            result, part_rejects = result
            rejects.append(part_rejects)
        frame, part_checks, sample = result
        aggregates[i] = frame
        for name, count in part_checks.items():
            checks[name] += count
        if sample is None or sampler[0] is None:
            sampler[0] = None
        else:
            sampler[0].merge(sample)
        advance(int(frame["n_events"].sum()) if frame.height else 0)

    def cuts() -> pl.DataFrame | None:
        return sampler[0].cuts if sampler[0] is not None else None

    with clock.stage("sorting partitions", rows) as advance:
        # Each task gets the merged sample's cuts as they are when it is sent: its own
        # sample comes back without the rows the merge would drop (MEDS 20x: 6.9M rows
        # sent back before, 3.8M after).
        run_map(pool, function, WithLatest(tasks, cuts) if sample_size else tasks, done)
    found = _concat_rejects(rejects) if function is sort_read_part else None
    return aggregates, checks, sampler[0], found


def _concat_rejects(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The partitions' rejects as one frame (`RejectLog.to_frame`'s, in the same order)."""
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=REJECT_SCHEMA)


def source_sample(sampled: ValueSampler | None, entities: pl.DataFrame) -> ValueSampler | None:
    """The sort stage's train sample by source splits where it is the build's own (every
    entity's split is its source split), else None (the sampling stage makes it)."""
    same = entities["split"].eq_missing(entities["source_split"]).all()
    return sampled if same and entities.height else None


def entity_tables(
    aggregates: list[pl.DataFrame],
    attributes: Sequence[str],
    splits: SplitConfig,
    ingested: Ingested,
    n_rejects: int,
    out: Path,
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The checked entity table with splits (sorted by name) and each partition's
    (entity, split, n_events) rows; checks rows read = used + rejected."""
    found = [a for a in aggregates if a.height]
    if found:
        entities = checked_entities(pl.concat(found).sort("entity"), attributes)
    else:
        entities = pl.DataFrame(schema={"entity": pl.String, "n_events": pl.Int64})
    _check_rows(ingested, int(entities["n_events"].sum()), n_rejects, out)
    entities = entities.join(
        assign_splits(entities, splits), on="entity", how="left", maintain_order="left"
    )
    return entities, _part_splits(aggregates, entities.select("entity", "split", "n_events"))


def _part_splits(aggregates: list[pl.DataFrame], split_of: pl.DataFrame) -> list[pl.DataFrame]:
    """Each partition's entities (in its order) with their split and event count: one
    join for all partitions, then cut apart (a join per partition hashed the whole
    entity table each time: 200 partitions of 1M entities, 18 CPU s while the workers
    waited)."""
    part_splits = [split_of.clear()] * len(aggregates)
    found = [
        a.select("entity", pl.lit(i, dtype=pl.Int64).alias("_part"))
        for i, a in enumerate(aggregates)
        if a.height
    ]
    if found:
        joined = pl.concat(found).join(split_of, on="entity", how="left", maintain_order="left")
        cut = joined.partition_by("_part", maintain_order=True, include_key=False, as_dict=True)
        for (part,), frame in cut.items():
            part_splits[int(part)] = frame
    return part_splits


def _check_rows(ingested: Ingested, n_events: int, n_rejects: int, out: Path) -> None:
    if ingested.rows_read != n_events + n_rejects:
        raise CorpusError(
            f"adapter {ingested.adapter!r} read {ingested.rows_read} rows but returned "
            f"{n_events} events and {n_rejects} rejects; rows read must equal events + rejects"
        )
    if n_events == 0:
        raise CorpusError(no_events_message(ingested, out))


def _ignore(*_: Any) -> None:
    pass


@contextmanager
def read_rejects(
    ingested: Ingested, clock: StageClock, pool: Any, folded: bool = False
) -> Iterator[Callable[[pl.DataFrame | None], pl.DataFrame]]:
    """The adapter's rejects as a frame, from the function this yields, which is given
    the sort stage's rejects (`folds_rejects`; None where it did not read them). Where
    the sort reads them (`folded`) there is no pass of their own. Else, in one process,
    they are read first (a stage of their own, so its CPU is the stage's alone); with
    worker processes they are read in a thread of this process while the workers sort,
    which otherwise waited for this pass of the source with a core idle. The stage's
    seconds are then its wall time and this process's CPU during it, both overlapping
    the sort's."""
    if folded:

        def from_sort(found: pl.DataFrame | None) -> pl.DataFrame:
            return ingested.rejects.to_frame() if found is None else found

        yield from_sort
        return
    if pool is None:
        with clock.stage("reading rejects"):
            frame = ingested.rejects.to_frame()
        yield lambda _: frame
        return

    def timed() -> tuple[pl.DataFrame, float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        frame = ingested.rejects.to_frame()
        return frame, time.perf_counter() - start, time.process_time() - cpu_start

    with ThreadPoolExecutor(1, thread_name_prefix="seqlm-rejects") as thread:
        future = thread.submit(timed)

        def result(_: pl.DataFrame | None) -> pl.DataFrame:
            frame, seconds, cpu = future.result()
            clock.record("reading rejects", seconds, cpu)
            return frame

        yield result
