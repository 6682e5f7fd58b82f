"""The map side of `build_corpus`: events spilled into entity-hash partitions, then
one function per stage that works on one partition alone.

Every entity's events land in exactly one partition (the hash of its name picks it), so
each partition holds whole entities and everything computed on it (its entity table,
its value sample, its token counts, its encoded sequences) merges exactly with the
others: sums, top-k by a fixed hash, concatenation. A partition is read a fixed number
of times whatever the number of partitions, so the build is linear in rows.

The stage functions take and return plain values (paths, small frames, arrays), so they
run in this process or in worker processes (`run_map`) with the same result.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.corpus.entities import entity_aggregates
from seqlm.errors import CorpusError
from seqlm.vocabularies.event_tokens import EncodedSequences, event_token_frame, sorted_events
from seqlm.vocabularies.fitting import TokenCounter
from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.value_bins import CodeValueBins, ValueSampler, edge_table
from seqlm.vocabularies.vocabulary import Vocabulary

# Fixed seed of the entity hash that picks a partition: the layout of the spill files
# (never the corpus, which is in entity-name order) depends on it.
PARTITION_SEED = 17
PART = "_part"
# The partitioned sink buffers up to a row group per open partition: small groups keep
# the partition stage flat (36.6M MEDS rows in 74 partitions: 0.72 GB peak at 10k rows
# per group, 1.35 GB at polars' default).
SPILL_ROW_GROUP = 10_000
# What encoding needs of `event_token_frame`'s rows.
TOKEN_COLUMNS = ["entity", "time_s", "gap", "bin", "data_token", "unknown"]


@dataclass(frozen=True)
class PartitionPaths:
    """Where partition `number` keeps its spill pieces, its sorted events and its
    event tokens (each file deleted once the next one is written)."""

    folder: Path
    number: int

    @property
    def pieces(self) -> list[Path]:
        # polars' partitioned sink writes `_part=N/00000000.parquet`, `...01`, in order.
        return sorted((self.folder / f"{PART}={self.number}").glob("*.parquet"))

    @property
    def sorted_file(self) -> Path:
        return self.folder / f"sorted-{self.number:05d}.parquet"

    @property
    def tokens_file(self) -> Path:
        return self.folder / f"tokens-{self.number:05d}.parquet"


def partition_of(entity: pl.Expr, n_partitions: int) -> pl.Expr:
    """The partition of each entity (a fixed hash of its name)."""
    # A null entity (an error the entity table reports) goes to partition 0.
    return (entity.hash(PARTITION_SEED) % n_partitions).fill_null(0).cast(pl.Int32)


def spill_partitions(events: pl.LazyFrame, folder: Path, n_partitions: int) -> None:
    """Stream `events` once into `n_partitions` folders of lz4 Parquet by entity hash.

    polars' partitioned sink, in source order (the sort's tie-break), in flat memory:
    a Python loop over batches would let the engine run ahead and buffer them.
    """
    keyed = events.with_columns(partition_of(pl.col("entity"), n_partitions).alias(PART))
    keyed.sink_parquet(
        pl.PartitionBy(folder, key=PART, include_key=False),
        compression="lz4",
        row_group_size=SPILL_ROW_GROUP,
        maintain_order=True,
        mkdir=True,
    )


def sort_partition(part: PartitionPaths, attributes: Sequence[str]) -> pl.DataFrame:
    """Sort one partition's events into its sorted file; return its entity aggregates
    (unchecked `entity_aggregates`: exact, since a partition holds whole entities)."""
    pieces = part.pieces
    if not pieces:
        return pl.DataFrame()
    rows = sorted_events(pl.read_parquet(pieces, glob=False).lazy()).collect()
    rows.write_parquet(part.sorted_file, compression="lz4")
    shutil.rmtree(pieces[0].parent)
    return entity_aggregates(rows.lazy(), attributes)


def _with_splits(part: PartitionPaths, splits: pl.DataFrame) -> pl.DataFrame:
    """The partition's sorted rows with the assigned split in place of the source's."""
    rows = pl.read_parquet(part.sorted_file, glob=False).drop("split")
    return rows.join(
        splits.select("entity", "split"), on="entity", how="left", maintain_order="left"
    )


def sample_partition(part: PartitionPaths, splits: pl.DataFrame, sample_size: int) -> ValueSampler:
    """Train value statistics of one partition (merged by `ValueSampler.merge`)."""
    sampler = ValueSampler(sample_size)
    if part.sorted_file.exists():
        train = splits.filter(pl.col("split") == "train")
        sampler.add(_with_splits(part, train).filter(pl.col("split") == "train"))
    return sampler


def count_partition(
    part: PartitionPaths,
    splits: pl.DataFrame,
    scheme: TokenScheme,
    bins: dict[str, CodeValueBins],
) -> TokenCounter:
    """Event tokens of one partition into its tokens file; returns its train token
    counts. The tokens are made once here and encoded from the file later."""
    counter = TokenCounter()
    if not part.sorted_file.exists():
        return counter
    rows = _with_splits(part, splits)
    frame = event_token_frame(rows.lazy(), scheme, bins, edge_table(bins)).collect()
    # Entities as run ids (rows are sorted): the counter's distinct-entity counts on
    # integers instead of strings.
    train = frame.filter(rows["split"] == "train")
    counter.add(train.with_columns(pl.col("entity").rle_id()))
    # With use_text, encoding checks held-out (code, text) pairs against train's: keep them.
    columns = TOKEN_COLUMNS + ["reserved_label"] + (["code", "text"] if scheme.use_text else [])
    frame.select(columns).write_parquet(part.tokens_file, compression="lz4")
    part.sorted_file.unlink()
    return counter


@dataclass
class EncodedPartition:
    """One partition's sequences: entity names (sorted) and lengths, ids and times."""

    entities: pl.Series
    lengths: np.ndarray
    ids: np.ndarray
    times: np.ndarray | None
    # Events whose label spelled a scheme token or was empty (they became unknowns).
    reserved_labels: int = 0


@cache
def _vocabulary(folder: str) -> Vocabulary:
    return Vocabulary.load(folder)


def encode_partition(part: PartitionPaths, vocab_folder: Path, has_times: bool) -> EncodedPartition:
    """Token ids (in the vocabulary's dtype) and float32 times of one partition."""
    vocab = _vocabulary(str(vocab_folder))
    empty = pl.Series("entity", [], dtype=pl.String)
    if not part.tokens_file.exists():
        return EncodedPartition(empty, np.zeros(0, np.int64), np.zeros(0, vocab.token_dtype), None)
    encoded = vocab.encode_token_frame(pl.read_parquet(part.tokens_file, glob=False))
    part.tokens_file.unlink()
    times = finite_times(encoded) if has_times else None
    return EncodedPartition(
        encoded.entities,
        encoded.lengths,
        encoded.ids.astype(vocab.token_dtype),
        times,
        encoded.reserved_labels,
    )


def finite_times(encoded: EncodedSequences) -> np.ndarray:
    """float32 times, refusing any that are not finite (adapters reject implausible
    times, so this is the last guard: `times.bin` never holds inf or NaN)."""
    times = encoded.times.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise CorpusError(
            f"a time of {encoded.times[bad[0]]!r} s does not fit times.bin "
            "(float32); reject such rows in the adapter (earliest_time / latest_time / "
            "max_abs_seconds)"
        )
    return times


def _worker_start(threads: int) -> None:
    os.environ["POLARS_MAX_THREADS"] = str(threads)


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Spawned workers (started as tasks arrive) re-run the parent's main script unless
    it is hidden from them:
    a user's script calling `build_corpus` without an `if __name__ == "__main__"` guard
    would otherwise run again in every worker. The workers need nothing from it."""
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` spawned processes sharing the cores (None: run in this process).

    Spawned, not forked: a fork of a process with polars' thread pool can deadlock. Each
    worker gets cores // workers polars threads so that they do not oversubscribe.
    """
    # A daemonic process (a multiprocessing.Pool worker) may not start processes.
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield None
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    saved = os.environ.get("POLARS_MAX_THREADS")
    # Read by polars when a worker imports it, so it must be in the environment the
    # workers inherit; this process's polars has read its own setting already.
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    try:
        with (
            ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=_worker_start,
                initargs=(threads,),
            ) as pool,
            _main_module_hidden(),
        ):
            yield pool
    finally:
        if saved is None:
            os.environ.pop("POLARS_MAX_THREADS", None)
        else:
            os.environ["POLARS_MAX_THREADS"] = saved


def run_map(
    pool: ProcessPoolExecutor | None,
    function: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    on_done: Callable[[int, Any], None],
) -> None:
    """Call `function(*task)` for every task, here or in `pool`; `on_done(i, result)`
    is called in task order, so merges happen in the same order either way."""
    if pool is None:
        for i, task in enumerate(tasks):
            on_done(i, function(*task))
        return
    futures = [pool.submit(function, *task) for task in tasks]
    try:
        for i, future in enumerate(futures):
            on_done(i, future.result())
    finally:
        for future in futures:
            future.cancel()
