"""`build_corpus`: an adapter's events to a corpus folder, in a bounded number of passes
over the rows whatever their number, written atomically.

The build is a map over partitions plus small reduces (docs/architecture.md, "Corpus
build"); every stage shows rows/s and an ETA and its seconds go into the manifest:

1. partition: the adapter's (unsorted) events stream once into `P = rows /
   rows_per_bucket` spill partitions by a hash of the entity, so each holds whole
   entities (polars' partitioned sink);
2. sort (map): each partition's entities are grouped and their events put in
   (time, order) order into a work file; it gives its entity aggregates and merge
   checks; reduce: the entity table (checked, sorted by name), rows read = events +
   rejects, and the splits; with `within_time_order="code"` each partition's events of
   one timestamp are then sorted by code (seqlm.corpus.within_time_order);
3. sample (map): train values per code, a bounded sample per partition; reduce: merged
   samples, the value bins;
4. count (map): event tokens per partition, numbers per row and strings per distinct
   (kind, code, text, bin) (seqlm.corpus.token_rows), laid out in sequences with
   provisional ids and times in raw files, and their train counts; reduce: the
   vocabulary (privacy threshold applied to the summed counts);
5. encode (map): each partition's provisional ids through one table to token ids,
   written with its times at its place in one spill file;
6. order: the sequences copied into `tokens.bin` / `times.bin` in entity-name order.

So `seq_id` follows the entity names' sort order, the same for any partition count and
any number of workers; the output equals the old one-scan-per-bucket builder's byte for
byte (tests/corpus/test_one_pass.py). Everything is written into a hidden folder beside
`out` and renamed into place at the end: a killed or failed build leaves no half corpus.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import seqlm
from seqlm.artefacts import file_record, record_files
from seqlm.corpora_adapters.base import Ingested
from seqlm.corpus.partitions import (
    EncodedPartition,
    PartitionPaths,
    count_partition,
    encode_partition,
    sample_partition,
    spill_files,
)
from seqlm.corpus.privacy import public_settings
from seqlm.corpus.shared_bins import share_bins
from seqlm.corpus.sort_stage import (
    entity_tables,
    folds_rejects,
    read_rejects,
    sorted_partitions,
    source_sample,
)
from seqlm.corpus.source_parts import DEFAULT_ROWS_PER_BUCKET, source_groups
from seqlm.corpus.splits import SplitConfig
from seqlm.corpus.stages import StageClock
from seqlm.corpus.store import (
    CHECKSUMMED_FILES,
    CORPUS_FILES,
    INDEX_FILE,
    MANIFEST_FILE,
    REJECTS_FILE,
    TIMES_FILE,
    TOKENS_FILE,
    Corpus,
    load_corpus,
)
from seqlm.corpus.token_rows import summed_fates
from seqlm.corpus.within_time_order import (
    DEFAULT_WITHIN_TIME_ORDER,
    MANIFEST_KEY,
    check_within_time_order,
    order_within_time,
)
from seqlm.corpus.workers import run_map, worker_pool
from seqlm.errors import ConfigError, CorpusError
from seqlm.events import EVENT_COLUMNS, SPLITS
from seqlm.outputs import (
    check_output,
    clean_stale_staging,
    move_into_place,
    new_staging,
    output_lock,
)
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies.fitting import TokenCounter
from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.time_gaps import is_unitless
from seqlm.vocabularies.value_bins import ValueSampler
from seqlm.vocabularies.vocabulary import Vocabulary

CORPUS_FORMAT = "seqlm-corpus/1"
# Below this many rows per worker, starting worker processes costs more than it saves.
MIN_ROWS_PER_WORKER = 1_000_000
# Tokens copied per step when putting the sequences in entity order.
ORDER_CHUNK_TOKENS = 4_000_000
SLICE_COPY_LENGTH = 256  # from this mean sequence length `_gather` copies slices


def build_corpus(
    ingested: Ingested,
    out: str | Path,
    scheme: TokenScheme,
    splits: SplitConfig,
    *,
    overwrite: bool = False,
    rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET,
    workers: int | None = None,
    progress: Progress | None = None,
    within_time_order: str = DEFAULT_WITHIN_TIME_ORDER,
    started: Any = None,
) -> Corpus:
    """Split, fit the vocabulary on train, tokenize and write the corpus folder `out`.

    `workers`: processes for the per-partition stages (None: the number of cores, or
    one when the input is too small for more to pay off: `planned_workers`). The corpus
    does not depend on it, nor on `rows_per_bucket` (the partition size).
    `within_time_order`: `file` or `code`, the order of the events of one timestamp
    (seqlm.corpus.within_time_order). `started`: worker processes started while the
    input was read (`workers.started_pool`), used if there are as many as planned.
    """
    out = Path(out)
    check_within_time_order(within_time_order)
    with output_lock(out, "seqlm ingest"):
        check_output(out, overwrite=overwrite, own_names=CORPUS_FILES)
        clean_stale_staging(out.parent)
        return _build_locked(
            ingested,
            out,
            scheme,
            splits,
            overwrite,
            rows_per_bucket,
            workers,
            progress,
            within_time_order,
            started,
        )


def planned_workers(
    rows: int, workers: int | None, rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET, parts: int = 0
) -> int:
    """How many processes a build of `rows` input rows uses (`workers` None: one per
    core, at least `MIN_ROWS_PER_WORKER` rows each): at most one per partition (hashed,
    or the source's `parts` where they are more)."""
    if workers is None:
        workers = min(os.cpu_count() or 1, rows // MIN_ROWS_PER_WORKER)
    return max(1, min(workers, max(math.ceil(rows / rows_per_bucket), parts)))


def _build_locked(
    ingested: Ingested,
    out: Path,
    scheme: TokenScheme,
    splits: SplitConfig,
    overwrite: bool,
    rows_per_bucket: int,
    workers: int | None,
    progress: Progress | None,
    within_time: str,
    started: Any,
) -> Corpus:
    clock = StageClock(ensure_progress(progress))
    events, attributes = _checked_events(ingested, scheme, rows_per_bucket, workers)
    n_parts = max(1, math.ceil(ingested.rows_read / rows_per_bucket))
    groups = source_groups([rows for rows, _ in ingested.source_parts], rows_per_bucket)
    workers = planned_workers(ingested.rows_read, workers, rows_per_bucket, len(groups or ()))

    staging = new_staging(out)
    try:
        work = staging / "_work"
        work.mkdir()
        folded = folds_rejects(ingested, groups)
        pool_of = worker_pool(workers, started)
        with pool_of as pool, read_rejects(ingested, clock, pool, folded) as found:
            sample_size = _sort_sample_size(scheme, splits, within_time)
            tasks = (events, n_parts, ingested, attributes, clock, sample_size)
            done, from_source, sort_rejects = sorted_partitions(pool, work, groups, *tasks)
            parts, aggregates, checks, sampled = done
            rejects = found(sort_rejects)
            entities, part_splits = entity_tables(
                aggregates, attributes, splits, ingested, rejects.height, out
            )
            n_events = int(entities["n_events"].sum())
            has_times = entities["first_time"].null_count() < entities.height
            fit = (scheme, n_events, clock, source_sample(sampled, entities), within_time)
            vocab, sizes = _fit_vocabulary(pool, parts, part_splits, has_times, *fit)
            vocab.save(staging)
            layout = (vocab, staging, sizes, has_times)
            encoded = _encode(pool, parts, part_splits, *layout, n_events, clock)
            with clock.stage("ordering sequences", n_events) as advance:
                in_order = (entities, encoded, vocab, work, staging, advance)
                lengths, records = _write_in_entity_order(pool, *in_order)
        shutil.rmtree(work)
        index = _index_frame(entities, lengths, attributes)
        index.write_parquet(staging / INDEX_FILE)
        rejects.write_parquet(staging / REJECTS_FILE)
        manifest = _manifest(ingested, scheme, splits, vocab, index, n_events, rejects.height)
        manifest["counts"]["reserved_labels"] = sum(part.reserved_labels for part in encoded)
        manifest["values"] = summed_fates(part.value_fates for part in encoded)
        manifest["times"] = has_times
        manifest["time_unit"] = ingested.time_unit
        manifest[MANIFEST_KEY] = within_time
        manifest["notes"] = list(ingested.notes)
        manifest["merge_checks"] = checks
        manifest["attributes"] = list(attributes)
        records.update(record_files(staging, set(CHECKSUMMED_FILES) - set(records)))
        manifest["files"] = {name: records[name] for name in CHECKSUMMED_FILES if name in records}
        manifest["build"] = _build_record(len(parts), from_source, workers)
        manifest["seconds_per_stage"] = clock.seconds
        # CPU seconds of this process only (all of a stage's CPU at one worker).
        manifest["cpu_seconds_per_stage"] = clock.cpu_seconds
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=1, default=str), encoding="utf-8"
        )
        move_into_place(staging, out, overwrite=overwrite, own_names=CORPUS_FILES)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_corpus(out)


def _checked_events(
    ingested: Ingested, scheme: TokenScheme, rows_per_bucket: int, workers: int | None
) -> tuple[pl.LazyFrame, tuple[str, ...]]:
    """The adapter's (unsorted) events and attributes, checked with the build's settings."""
    if rows_per_bucket < 1:
        raise ConfigError("rows_per_bucket must be at least 1")
    if workers is not None and workers < 1:
        raise ConfigError("workers must be at least 1")
    attributes = tuple(ingested.events.attributes)
    events = ingested.events.unsorted
    events = ingested.events.frame if events is None else events
    names = events.collect_schema().names()
    missing = [c for c in (*EVENT_COLUMNS, *attributes) if c not in names]
    if missing:
        raise CorpusError(f"adapter {ingested.adapter!r} gave events without columns {missing}")
    check_time_gap_units(scheme, ingested.time_unit)
    return events, attributes


def _build_record(partitions: int, from_source: bool, workers: int) -> dict[str, Any]:
    """The manifest's `build`: how the events were partitioned and how many processes."""
    return {
        "partitions": partitions,
        # "source": the adapter's own parts (MEDS shards), else hashed by entity.
        "partitions_from": "source" if from_source else "hash",
        "spill_files": 0 if from_source else spill_files(partitions),
        "workers": workers,
    }


def _sort_sample_size(scheme: TokenScheme, splits: SplitConfig, within_time: str) -> int:
    """The sample size for the sort stage's train sample by source splits (0: none):
    only where the splits may be the source's and the sorted files keep their order."""
    wanted = scheme.uses_values and splits.use_source_split and within_time == "file"
    return scheme.value_sample_size if wanted else 0


def _fit_vocabulary(
    pool: Any,
    parts: list[PartitionPaths],
    part_splits: list[pl.DataFrame],
    has_times: bool,
    scheme: TokenScheme,
    n_events: int,
    clock: StageClock,
    sampled: ValueSampler | None,
    within_time_order: str,
) -> tuple[Vocabulary, list[int]]:
    """Order each timestamp's events (`within_time_order`), fit the value bins on the
    merged train samples (`sampled`: the sort stage's), count the partitions' tokens
    into the vocabulary (`count_partition`); returns it and each one's token count."""
    order_within_time(pool, parts, within_time_order, n_events, clock)
    rows = [int(s["n_events"].sum()) for s in part_splits]
    sampler = sampled if sampled is not None else ValueSampler(scheme.value_sample_size)
    if scheme.uses_values and sampled is None:
        with clock.stage("sampling train values", n_events) as advance:
            tasks = [
                (p, s, scheme.value_sample_size) for p, s in zip(parts, part_splits, strict=True)
            ]
            run_map(
                pool, sample_partition, tasks, lambda i, r: (sampler.merge(r), advance(rows[i]))
            )
    bins = sampler.fit(scheme)
    counter = TokenCounter()
    sizes = [0] * len(parts)

    def counted(i: int, result: tuple[TokenCounter, int]) -> None:
        counter.merge(result[0])
        sizes[i] = result[1]
        advance(rows[i])

    with clock.stage("counting train tokens", n_events) as advance:
        shared = share_bins(bins, parts[0].folder if parts else None)
        tasks = [(p, s, scheme, shared, has_times) for p, s in zip(parts, part_splits, strict=True)]
        run_map(pool, count_partition, tasks, counted)
    fitted = counter.choose(scheme, bins, scheme.time_gap_tokens())
    return Vocabulary.from_fitted(scheme, fitted), sizes


def _encode(
    pool: Any,
    parts: list[PartitionPaths],
    part_splits: list[pl.DataFrame],
    vocab: Vocabulary,
    vocab_folder: Path,
    sizes: list[int],
    has_times: bool,
    n_events: int,
    clock: StageClock,
) -> list[EncodedPartition]:
    """Encode every partition: each writes its ids (and times) into the spill files
    at its place in partition order (`sizes`: tokens per partition), so this process
    copies no tokens; returns each partition's entities and lengths."""
    work = parts[0].folder
    spill = (work / "encoded.tokens", work / "encoded.times" if has_times else None)
    for path, dtype in zip(spill, (vocab.token_dtype, np.dtype(np.float32)), strict=True):
        if path is not None:
            with open(path, "wb") as handle:
                handle.truncate(sum(sizes) * dtype.itemsize)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).tolist()
    results: list[EncodedPartition] = []
    with clock.stage("encoding tokens", n_events) as advance:

        def done(i: int, part: EncodedPartition) -> None:
            results.append(part)
            advance(int(part.lengths.sum()) - 2 * len(part.lengths))

        tasks = [
            (p, vocab_folder, s["entity"], offset, spill)
            for p, s, offset in zip(parts, part_splits, offsets, strict=True)
        ]
        run_map(pool, encode_partition, tasks, done)
    return results


def _write_in_entity_order(
    pool: Any,
    entities: pl.DataFrame,
    encoded: list[EncodedPartition],
    vocab: Vocabulary,
    work: Path,
    folder: Path,
    advance: Any,
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Copy the partitions' sequences into the token files in entity-name order
    (seq_id order), one file per worker (`pool`; x20: the tokens 0.34 s and the times
    0.29 s, one after the other in this process before); returns the lengths in that
    order and the files' checksum records (`artefacts.file_record`)."""
    located = pl.concat(
        [pl.DataFrame({"entity": e.entities, "length": e.lengths}) for e in encoded]
    ).with_columns(source=pl.col("length").cum_sum() - pl.col("length"))
    ordered = entities.select("entity").join(
        located, on="entity", how="left", maintain_order="left"
    )
    if ordered["length"].null_count() or ordered.height != located.height:
        raise CorpusError("internal: encoded sequences do not match the entity table")
    lengths = ordered["length"].to_numpy()
    source = ordered["source"].to_numpy()
    targets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # One partition, or the hash happened to keep the order: the spill files are renamed.
    in_order = bool((source == targets).all())
    tasks = [
        (work / name, folder / target, dtype, source, lengths, in_order)
        for name, target, dtype in (
            ("encoded.tokens", TOKENS_FILE, vocab.token_dtype),
            ("encoded.times", TIMES_FILE, np.dtype(np.float32)),
        )
        if (work / name).exists()
    ]
    records: dict[str, dict[str, Any]] = {}
    run_map(pool, _gather, tasks, lambda i, record: records.update(record))
    advance(int(lengths.sum()) - 2 * len(lengths))
    return lengths, records


def _gather(
    source_file: Path,
    target: Path,
    dtype: np.dtype,
    source: np.ndarray,
    lengths: np.ndarray,
    in_order: bool,
) -> dict[str, dict[str, Any]]:
    """Write the `lengths[i]` items at `source[i]` of `source_file`, for every i in order,
    a few million items at a time (a fresh mapping per step keeps the resident set small),
    or rename it if `in_order`; returns `target`'s checksum record, taken while cached."""
    if in_order:
        os.replace(source_file, target)
        return {target.name: file_record(target)}
    ends = np.cumsum(lengths)
    with open(target, "wb") as handle:
        first = 0
        while first < len(lengths):
            base = ends[first] - lengths[first]
            last = int(np.searchsorted(ends, base + ORDER_CHUNK_TOKENS, side="right"))
            last = max(last, first + 1)
            chunk = lengths[first:last]
            mapped = np.memmap(source_file, dtype=dtype, mode="r").view(np.ndarray)
            if int(chunk.sum()) >= SLICE_COPY_LENGTH * len(chunk):
                # Long sequences: copied slice by slice, no index array per token (x20:
                # 2,000 sequences, 0.34 -> 0.1 s for tokens.bin).
                for start, length in zip(source[first:last].tolist(), chunk.tolist(), strict=True):
                    handle.write(mapped[start : start + length])
            else:
                starts = np.repeat(source[first:last] - (np.cumsum(chunk) - chunk), chunk)
                handle.write(mapped[starts + np.arange(int(chunk.sum()))].tobytes())
            del mapped
            first = last
    return {target.name: file_record(target)}


def _index_frame(
    entities: pl.DataFrame, lengths: np.ndarray, attributes: Sequence[str]
) -> pl.DataFrame:
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    return pl.DataFrame(
        {
            "seq_id": np.arange(len(lengths), dtype=np.int64),
            "entity": entities["entity"],
            "group": entities["group"],
            "split": entities["split"],
            "offset": offsets,
            "length": lengths,
            "first_time": entities["first_time"],
            "last_time": entities["last_time"],
        }
    ).hstack(entities.select(list(attributes)))


def _manifest(
    ingested: Ingested,
    scheme: TokenScheme,
    splits: SplitConfig,
    vocab: Vocabulary,
    index: pl.DataFrame,
    n_events: int,
    n_rejects: int,
) -> dict[str, Any]:
    per_split = index.group_by("split").agg(pl.len(), pl.col("length").sum())
    sequences = dict(zip(per_split["split"], per_split["len"], strict=True))
    tokens = dict(zip(per_split["split"], per_split["length"], strict=True))
    return {
        "format": CORPUS_FORMAT,
        "seqlm_version": seqlm.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "adapter": ingested.adapter,
            "settings": public_settings(ingested.settings, vocab),
        },
        "scheme": scheme.to_dict(),
        "splits": splits.to_dict(),
        "vocabulary": {
            "hash": vocab.hash,
            "size": len(vocab),
            "merged_tokens": vocab.merged_tokens,
            "value_binned_codes": len(vocab.value_bins),
        },
        "token_dtype": vocab.token_dtype.name,
        "counts": {
            "rows_read": ingested.rows_read,
            "events": n_events,
            "rejects": n_rejects,
            "sequences": index.height,
            "tokens": int(index["length"].sum()),
            "sequences_per_split": {s: int(sequences.get(s, 0)) for s in SPLITS},
            "tokens_per_split": {s: int(tokens.get(s, 0)) for s in SPLITS},
        },
    }


def check_time_gap_units(scheme: TokenScheme, time_unit: str) -> None:
    """Time-gap edges must match the corpus's time: durations for seconds, plain numbers
    for unitless (index) time, so a beat is never read as a second."""
    if not scheme.time_tokens:
        return
    unitless = [is_unitless(label) for label in scheme.time_gap_edges]
    if time_unit == "index" and not all(unitless):
        raise ConfigError(
            'time is unitless (time_unit = "index"), so scheme.time_gap_edges must be plain '
            "numbers of time units, e.g. scheme.time_gap_edges=[1, 2, 4, 8]"
        )
    if time_unit != "index" and any(unitless):
        raise ConfigError(
            "scheme.time_gap_edges need a unit (80ms, 5m, 2h) for times in seconds; plain "
            'numbers are for time_unit = "index"'
        )
