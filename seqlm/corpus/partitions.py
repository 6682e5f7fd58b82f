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

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.corpus.entities import run_aggregates
from seqlm.corpus.merge_checks import merge_checks
from seqlm.corpus.shared_bins import shared_bins
from seqlm.corpus.token_rows import (
    keyed_rows,
    layout_table,
    pair_fate_counts,
    pair_tokens,
    token_layout,
    train_counts,
    vocabulary_frames,
)
from seqlm.errors import CorpusError
from seqlm.vocabularies.event_tokens import EncodedSequences
from seqlm.vocabularies.fitting import TokenCounter, check_known_sources
from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.value_bins import CodeValueBins, ValueSampler
from seqlm.vocabularies.vocabulary import Vocabulary

# Fixed seed of the entity hash that picks a partition: the layout of the spill files
# (never the corpus, which is in entity-name order) depends on it.
PARTITION_SEED = 17
PART = "_part"
# The partitioned sink buffers up to a row group per open partition: small groups keep
# the partition stage flat (36.6M MEDS rows in 74 partitions: 0.72 GB peak at 10k rows
# per group, 1.35 GB at polars' default).
SPILL_ROW_GROUP = 10_000
# At most this many partitions are open in one sink: its buffers grow with the number
# of open partitions (MEDS 100x, 184 partitions in one sink: 1.4 GB), so more
# partitions are spilled in two levels: `SPILL_FILES` spill files first, each then split
# into its partitions by `split_spill` (one more write and read of the rows).
SPILL_FILES = 48
SPILL = "_spill"
# What sampling and tokens need of the sorted events (entity-level columns are in the
# sort stage's aggregates).
SORTED_COLUMNS = ["entity", "time", "order", "kind", "code", "value", "text"]
SAMPLED_COLUMNS = ["entity", "time", "order", "code", "value", "text"]
COUNTED_COLUMNS = ["entity", "time", "kind", "code", "value", "text"]
# The sorted and tokens work files are Arrow IPC with lz4: written once and read back
# by this build only, they need no Parquet encoding (a third cheaper to write).
WORK_COMPRESSION = "lz4"
# Columns of the sorted work file kept as categoricals: their strings are written once
# per distinct value (a partition of 500k MEDS rows holds a few thousand), so the file
# is written and read in about half the time (x20: 0.26 -> 0.15 CPU us per row) and
# the count stage groups their integer ids.
CATEGORICAL_COLUMNS = ("kind", "code", "text")
# The sorted file keeps `order` minus the row number: a partition read in file order
# then holds one value or a few (its rows' order rises by one but where rows were
# rejected), which lz4 packs into almost nothing (MEDS 20x: writing the file 0.123 ->
# 0.098 CPU us per row, one thread; a third smaller).
ORDER_STEP = pl.int_range(pl.len(), dtype=pl.Int64)
# The pairs file: the strings of each distinct (kind, code, text, bin) of a partition.
PAIR_COLUMNS = ["pair", "data_token", "unknown", "code", "text", "reserved_label"]
PAIR_COLUMNS += ["text_unknown", "text_fate", "value_fate"]  # issue 20: text values


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
        return self.folder / f"sorted-{self.number:05d}.arrow"

    @property
    def layout_file(self) -> Path:
        # Raw int32: the provisional token ids (token_rows.token_layout).
        return self.folder / f"layout-{self.number:05d}.i32"

    @property
    def times_file(self) -> Path:
        # Raw float32: each token's time (times.bin's values).
        return self.folder / f"times-{self.number:05d}.f32"

    @property
    def lengths_file(self) -> Path:
        # Raw int64: each entity's sequence length, in the sorted file's entity order.
        return self.folder / f"lengths-{self.number:05d}.i64"

    @property
    def pairs_file(self) -> Path:
        # Arrow IPC as the other work files: a few thousand rows of strings, which Parquet
        # took four times as long to write (MEDS 20x: 9 ms a partition, 0.02 us a row).
        return self.folder / f"pairs-{self.number:05d}.arrow"


def read_work_file(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """A work file read back; glob=False because the output folder may hold `[` or `*`."""
    frame = pl.scan_ipc(path, glob=False)
    return (frame.select(columns) if columns is not None else frame).collect()


def write_sorted_file(rows: pl.DataFrame, path: Path) -> pl.DataFrame:
    """A partition's sorted events (`SORTED_COLUMNS`) into its work file, the
    `CATEGORICAL_COLUMNS` dictionary-encoded and `order` as its step from the row
    number (`ORDER_STEP`); returns what it holds (`order` as it is)."""
    cast = [pl.col(c).cast(pl.Categorical) for c in CATEGORICAL_COLUMNS]
    stored = rows.select(SORTED_COLUMNS).with_columns(cast)
    stored.with_columns(pl.col("order") - ORDER_STEP).write_ipc(path, compression=WORK_COMPRESSION)
    return stored


def read_sorted_file(
    path: Path, columns: list[str] | None = None, strings: bool = True
) -> pl.DataFrame:
    """A sorted work file read back, its categorical columns as strings unless not
    `strings` (the count stage works on their ids)."""
    rows = read_work_file(path, columns)
    if "order" in rows.columns:
        rows = rows.with_columns(pl.col("order") + ORDER_STEP)
    if not strings:
        return rows
    return rows.with_columns(pl.col(c).cast(pl.String) for c in CATEGORICAL_COLUMNS if c in rows)


def partition_of(entity: pl.Expr, n_partitions: int) -> pl.Expr:
    """The partition of each entity (a fixed hash of its name)."""
    # A null entity (an error the entity table reports) goes to partition 0.
    return (entity.hash(PARTITION_SEED) % n_partitions).fill_null(0).cast(pl.Int32)


def spill_files(n_partitions: int) -> int:
    """How many files the events stream into: one per partition, up to `SPILL_FILES`."""
    return min(n_partitions, SPILL_FILES)


def spill_partitions(events: pl.LazyFrame, folder: Path, n_partitions: int) -> None:
    """Stream `events` once into `n_partitions` folders of lz4 Parquet by entity hash,
    or, beyond `SPILL_FILES` partitions, into `SPILL_FILES` spill folders (partition
    `p` in spill file `p % SPILL_FILES`, its number kept in a column) that
    `split_spill` splits afterwards.

    polars' partitioned sink, in source order (the sort's tie-break), in flat memory:
    a Python loop over batches would let the engine run ahead and buffer them.
    """
    keyed = events.with_columns(partition_of(pl.col("entity"), n_partitions).alias(PART))
    n_files = spill_files(n_partitions)
    if n_files == n_partitions:
        _sink_by(keyed, folder, PART)
    else:
        # The partition number stays in the spill files for `split_spill`.
        _sink_by(keyed.with_columns((pl.col(PART) % n_files).alias(SPILL)), folder / SPILL, SPILL)


def _sink_by(frame: pl.LazyFrame, folder: Path, key: str) -> None:
    """`frame` into `folder/<key>=N/*.parquet` by the column `key` (dropped from the
    files), in source order, in small row groups."""
    frame.sink_parquet(
        pl.PartitionBy(folder, key=key, include_key=False),
        compression="lz4",
        row_group_size=SPILL_ROW_GROUP,
        maintain_order=True,
        mkdir=True,
    )


def split_spill(folder: Path, spill: int) -> None:
    """Split spill file `spill` (written by `spill_partitions` beyond `SPILL_FILES`
    partitions) into its partitions' folders, in source order, then delete it."""
    source = folder / SPILL / f"{SPILL}={spill}"
    pieces = sorted(source.glob("*.parquet"))
    if not pieces:
        return
    target = folder / f"{SPILL}-{spill}"
    _sink_by(pl.scan_parquet(pieces, glob=False), target, PART)
    # Each partition lives in one spill file, so the folders never collide.
    for part in target.iterdir():
        part.rename(folder / part.name)
    target.rmdir()
    shutil.rmtree(source)


# What the sort stage gives per partition: entity aggregates, merge checks, train sample.
Sorted = tuple[pl.DataFrame, dict[str, int], ValueSampler | None]


def sort_partition(
    part: PartitionPaths,
    attributes: Sequence[str],
    sample_size: int = 0,
    cuts: pl.DataFrame | None = None,
) -> Sorted:
    """Sort one partition's events into its sorted file; return its entity aggregates
    in the file's entity order (unchecked `entity_aggregates`: exact, since a partition
    holds whole entities), its `merge_checks` counts (they add up over partitions for
    the same reason) and, given a `sample_size`, `source_train_sample` (cut at `cuts`)."""
    pieces = part.pieces
    if not pieces:
        return pl.DataFrame(), {}, ValueSampler(sample_size) if sample_size else None
    rows = pl.read_parquet(pieces, glob=False)
    result = sort_rows(part, rows, attributes, sample_size, cuts)
    shutil.rmtree(pieces[0].parent)
    return result


def sort_rows(
    part: PartitionPaths,
    rows: pl.DataFrame,
    attributes: Sequence[str],
    sample_size: int = 0,
    cuts: pl.DataFrame | None = None,
) -> Sorted:
    """`sort_partition` of the partition's events `rows` (whole entities)."""
    if not rows.height:
        return pl.DataFrame(), {}, ValueSampler(sample_size) if sample_size else None
    # One chunk per column: an eager select on a frame of several chunks (the source's
    # pieces, row groups) copies them into one each time (MEDS 20x: 0.015 CPU us per row a
    # select); the sort stage selects from these rows several times.
    rows = _in_sequence_order(rows).rechunk()
    # Only what sampling and tokens need: the entity-level columns are in the aggregates.
    stored = write_sorted_file(rows, part.sorted_file)
    # On the sorted rows with entities as run ids (integers hash faster than names), and
    # only the columns it reads (its filters would copy every column); codes categorical.
    checks = merge_checks(stored.select(pl.col("entity").rle_id(), "time", "order", "code"))
    # The entities in the file's order: the later stages number them by their runs.
    aggregates = run_aggregates(rows, attributes)
    sample = source_train_sample(rows, sample_size, stored, cuts) if sample_size else None
    return aggregates, checks, sample


def _in_sequence_order(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` as `_grouped_events` orders them, sorting only what needs it: rows already
    in that order stay (most sources are written so, and a partition keeps the source's
    order); rows whose entities' runs are in order but interrupted (a streaming join
    emits the source in pieces out of order) are put back in `order`, one integer key."""
    state = sequence_order(rows)
    if state == "ordered":
        return rows
    if state == "runs split":
        by_order = rows.sort("order", maintain_order=True)
        if sequence_order(by_order) == "ordered":
            return by_order
    return _grouped_events(rows.lazy()).collect()


def in_sequence_order(rows: pl.DataFrame) -> bool:
    """Whether `rows` are already as `_grouped_events` puts them: each entity's rows in
    one run, in (time, order) with null times first (so its sort would keep them)."""
    return sequence_order(rows) == "ordered"


def sequence_order(rows: pl.DataFrame) -> str:
    """ "ordered" (as `in_sequence_order`), "runs split" (every run of rows of one entity
    is in (time, order) but an entity has several runs) or "unordered". Anything
    unusual (a null entity or order, a NaN time) is "unordered"."""
    entity, time, order = pl.col("entity"), pl.col("time"), pl.col("order")
    new_run = entity.ne_missing(entity.shift(1))
    earlier_time = time.shift(1)
    same_time = (time == earlier_time) | (time.is_null() & earlier_time.is_null())
    in_order = (
        new_run
        | (earlier_time.is_null() & time.is_not_null())
        | (time > earlier_time).fill_null(False)
        | (same_time & (order >= order.shift(1))).fill_null(False)
    )
    nan = time.is_nan().any() if rows.schema["time"].is_float() else pl.lit(False)
    flags = rows.select(
        in_order.all().alias("in_order"),
        nan.alias("nan"),
        entity.null_count().alias("null_entities"),
        order.null_count().alias("null_orders"),
    ).row(0, named=True)
    if not flags["in_order"] or flags["nan"] or flags["null_entities"] or flags["null_orders"]:
        return "unordered"
    # Each entity in one run: the runs' names are distinct.
    starts = rows.filter(rows.select(new_run).to_series())["entity"]
    return "ordered" if starts.n_unique() == starts.len() else "runs split"


def _grouped_events(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Each entity's events together and in sequence order (time with static rows
    first, then `order`), the entities in any fixed order: sorted by their categorical
    ids, which is twice as fast as by name. The corpus is put in name order at the end."""
    entity = pl.col("entity")
    # Integer ids (MEDS subjects, `Ingested.source_reads`) are keys already.
    integers = frame.collect_schema()["entity"].is_integer()
    key = entity if integers else entity.cast(pl.Categorical).to_physical()
    return (
        frame.with_columns(key.alias("_entity_key"))
        .sort(["_entity_key", "time", "order"], nulls_last=False, maintain_order=True)
        .drop("_entity_key")
    )


def _is_train(part_split: pl.DataFrame) -> np.ndarray:
    """Per sorted row, whether its entity is in train: the partition's entities are in
    the sorted file's order with their event counts, so no join is needed."""
    train = (part_split["split"] == "train").fill_null(False).to_numpy()
    return np.repeat(train, part_split["n_events"].to_numpy())


def sample_partition(
    part: PartitionPaths, part_split: pl.DataFrame, sample_size: int
) -> ValueSampler:
    """Train value statistics of one partition (merged by `ValueSampler.merge`)."""
    sampler = ValueSampler(sample_size)
    if part.sorted_file.exists():
        rows = read_sorted_file(part.sorted_file, SAMPLED_COLUMNS, strings=False)
        sampler.add(rows.filter(pl.Series(_is_train(part_split))), entity_runs=True)
    return sampler


def source_train_sample(
    rows: pl.DataFrame,
    sample_size: int,
    stored: pl.DataFrame | None = None,
    cuts: pl.DataFrame | None = None,
) -> ValueSampler | None:
    """`sample_partition` of sorted `rows`, made by the sort stage from the rows' own
    (source) split, which saves the sampling stage's read of the sorted file: the same
    sample wherever the build's splits are the source's (the writer checks). None when
    the rows have no source split. `cuts`: those of the sampler it will be merged into,
    as they were when the task was sent (`ValueSampler.prune`)."""
    if rows["split"].null_count() == rows.height:
        return None
    sampler = ValueSampler(sample_size)
    # From the sorted file's columns (`stored`: codes and texts categorical) if given.
    columns = (stored if stored is not None else rows).select(SAMPLED_COLUMNS)
    train = columns.filter(rows["split"] == "train")
    sampler.add(train, entity_runs=True)
    if cuts is not None:
        sampler.prune(cuts)
    return sampler


def count_partition(
    part: PartitionPaths,
    part_split: pl.DataFrame,
    scheme: TokenScheme,
    bins: dict[str, CodeValueBins] | Path,
    has_times: bool = True,
) -> tuple[TokenCounter, int]:
    """Event tokens of one partition (numbers per row, strings per distinct pair:
    seqlm.corpus.token_rows), laid out in sequences with provisional ids
    (`token_layout`) into its layout, times and lengths files, the pairs (with their
    row counts) into its pairs file; returns its train token counts and its number of
    tokens. The encode stage only turns the provisional ids into the vocabulary's."""
    counter = TokenCounter()
    if not part.sorted_file.exists():
        return counter, 0
    if isinstance(bins, Path):
        bins = shared_bins(bins)
    rows = read_sorted_file(part.sorted_file, COUNTED_COLUMNS, strings=False)
    keyed, pairs = keyed_rows(rows, scheme, bins)
    del rows
    tokens = pair_tokens(pairs, scheme)
    counter.add_counted(*train_counts(keyed, tokens, _is_train(part_split)))
    layout = token_layout(keyed, scheme)
    if len(layout.lengths) != part_split.height:
        raise CorpusError("internal: a partition's sequences do not match its entities")
    if has_times:
        finite_times(layout).tofile(part.times_file)
    layout.ids.astype(np.int32).tofile(part.layout_file)
    layout.lengths.tofile(part.lengths_file)
    pair_rows = np.bincount(keyed["pair"].to_numpy(), minlength=tokens.height)
    tokens.select(PAIR_COLUMNS).with_columns(
        pl.Series("rows", pair_rows[tokens["pair"].to_numpy()], dtype=pl.Int64)
    ).write_ipc(part.pairs_file, compression=WORK_COMPRESSION)
    part.sorted_file.unlink()
    return counter, len(layout.ids)


@dataclass
class EncodedPartition:
    """One partition's sequences: entity names (sorted) and lengths."""

    entities: pl.Series
    lengths: np.ndarray
    # Events whose label spelled a scheme token or was empty (they became unknowns).
    reserved_labels: int = 0
    # What became of texts and numeric values (token_rows.pair_fate_counts).
    value_fates: dict[str, int] = field(default_factory=dict)


@cache
def _vocabulary(folder: str) -> Vocabulary:
    return Vocabulary.load(folder)


def encode_partition(
    part: PartitionPaths,
    vocab_folder: Path,
    names: pl.Series,
    offset: int,
    spill: tuple[Path, Path | None],
) -> EncodedPartition:
    """Token ids (in the vocabulary's dtype) of one partition, written with its times
    at token `offset` of the spill files `spill` (tokens, times or None); `names`
    are its entities in sorted order (its lengths file numbers them)."""
    vocab = _vocabulary(str(vocab_folder))
    if not part.layout_file.exists():
        return EncodedPartition(pl.Series("entity", [], dtype=pl.String), np.zeros(0, np.int64))
    pairs = read_work_file(part.pairs_file).sort("pair")
    if vocab.scheme.use_text:
        check_known_sources(pairs, vocab.data_tokens, vocabulary_frames(vocab).known)
    ids = layout_table(vocab, pairs)[np.fromfile(part.layout_file, np.int32)]
    _write_at(spill[0], ids, offset)
    if spill[1] is not None:
        _write_at(spill[1], np.fromfile(part.times_file, np.float32), offset)
    lengths = np.fromfile(part.lengths_file, np.int64)
    reserved = int(pairs.filter("reserved_label")["rows"].sum())
    fates = pair_fate_counts(vocab, pairs)
    for done in (part.layout_file, part.times_file, part.lengths_file, part.pairs_file):
        done.unlink(missing_ok=True)
    return EncodedPartition(names, lengths, reserved, fates)


def _write_at(path: Path, items: np.ndarray, offset: int) -> None:
    """`items` into `path` from item `offset` on (the partitions' places do not overlap,
    so workers write into one file side by side)."""
    with open(path, "r+b") as handle:
        handle.seek(offset * items.itemsize)
        handle.write(memoryview(items))


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
