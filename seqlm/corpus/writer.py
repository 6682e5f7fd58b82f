"""`build_corpus`: an adapter's events to a corpus folder, streaming, written atomically.

Memory stays bounded by the largest bucket, not the row count:

1. one streaming `group_by("entity")` over the events gives the entity table (group,
   source split, attributes, event count, first/last time) and the splits;
2. the entities, sorted by name, are cut into buckets of about `rows_per_bucket`
   events; each bucket is read with a range filter on `entity` (pushed down into the
   source's scan), sorted, tagged with its split and written to a work file, while the
   train rows feed the value-bin sampler;
3. the work files are read again to count train tokens, and the vocabulary is chosen;
4. they are read a last time to encode (a vectorised lookup) and append to
   `tokens.bin` / `times.bin`.

So `seq_id` follows the entity names' sort order, the same on every run. Everything is
written into a hidden folder beside `out` and renamed into place at the end: a killed
or failed build leaves no half corpus.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import seqlm
from seqlm.artefacts import record_files
from seqlm.corpora_adapters.base import EVENT_COLUMNS, SPLITS, Ingested
from seqlm.corpus.empty_ingest import no_events_message
from seqlm.corpus.merge_checks import merge_checks
from seqlm.corpus.privacy import public_settings
from seqlm.corpus.splits import SplitConfig, assign_splits
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
from seqlm.errors import ConfigError, CorpusError, InputError
from seqlm.outputs import (
    check_output,
    clean_stale_staging,
    move_into_place,
    new_staging,
    output_lock,
)
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies.event_tokens import EncodedSequences, sorted_events
from seqlm.vocabularies.fitting import VocabularyFitter
from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.time_gaps import is_unitless
from seqlm.vocabularies.vocabulary import Vocabulary

CORPUS_FORMAT = "seqlm-corpus/1"
# About 0.4 GB peak on generic events with time tokens (measured at 1M and 4M rows).
DEFAULT_ROWS_PER_BUCKET = 500_000


def build_corpus(
    ingested: Ingested,
    out: str | Path,
    scheme: TokenScheme,
    splits: SplitConfig,
    *,
    overwrite: bool = False,
    rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET,
    progress: Progress | None = None,
) -> Corpus:
    """Split, fit the vocabulary on train, tokenize and write the corpus folder `out`."""
    out = Path(out)
    progress = ensure_progress(progress)
    with output_lock(out, "seqlm ingest"):
        check_output(out, overwrite=overwrite, own_names=CORPUS_FILES)
        clean_stale_staging(out.parent)
        return _build_locked(ingested, out, scheme, splits, overwrite, rows_per_bucket, progress)


def _build_locked(
    ingested: Ingested,
    out: Path,
    scheme: TokenScheme,
    splits: SplitConfig,
    overwrite: bool,
    rows_per_bucket: int,
    progress: Progress,
) -> Corpus:
    if rows_per_bucket < 1:
        raise ConfigError("rows_per_bucket must be at least 1")
    events = ingested.events.frame
    attributes = tuple(ingested.events.attributes)
    names = events.collect_schema().names()
    missing = [c for c in (*EVENT_COLUMNS, *attributes) if c not in names]
    if missing:
        raise CorpusError(f"adapter {ingested.adapter!r} gave events without columns {missing}")

    progress.start("scanning entities")
    entities = entity_table(events, attributes)
    progress.finish()
    n_events = int(entities["n_events"].sum())
    n_rejects = len(ingested.rejects)
    if ingested.rows_read != n_events + n_rejects:
        raise CorpusError(
            f"adapter {ingested.adapter!r} read {ingested.rows_read} rows but returned "
            f"{n_events} events and {n_rejects} rejects; rows read must equal events + rejects"
        )
    if n_events == 0:
        raise CorpusError(no_events_message(ingested, out))
    check_time_gap_units(scheme, ingested.time_unit)
    entities = entities.join(
        assign_splits(entities, splits), on="entity", how="left", maintain_order="left"
    )
    buckets = bucket_bounds(entities["n_events"], rows_per_bucket)

    staging = new_staging(out)
    try:
        work = staging / "_work"
        work.mkdir()
        vocab = _fit_vocabulary(events, entities, buckets, scheme, work, progress)
        vocab.save(staging)
        has_times = entities["first_time"].null_count() < entities.height
        lengths, reserved = _write_tokens(
            vocab, entities, buckets, work, staging, has_times, progress
        )
        shutil.rmtree(work)
        index = _index_frame(entities, lengths, attributes)
        index.write_parquet(staging / INDEX_FILE)
        ingested.rejects.to_frame().write_parquet(staging / REJECTS_FILE)
        manifest = _manifest(ingested, scheme, splits, vocab, index, n_events, n_rejects)
        manifest["counts"]["reserved_labels"] = reserved
        manifest["times"] = has_times
        manifest["time_unit"] = ingested.time_unit
        manifest["notes"] = list(ingested.notes)
        manifest["merge_checks"] = merge_checks(events)
        manifest["attributes"] = list(attributes)
        manifest["files"] = record_files(staging, CHECKSUMMED_FILES)
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=1, default=str), encoding="utf-8"
        )
        move_into_place(staging, out, overwrite=overwrite, own_names=CORPUS_FILES)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_corpus(out)


def entity_table(events: pl.LazyFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """One row per entity (sorted by name): group, source split, attributes, event
    count and first/last time. Streams; checks that entity-level columns are constant."""
    constant = ["group", "split", *attributes]
    frame = (
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


def bucket_bounds(n_events: pl.Series, rows_per_bucket: int) -> list[tuple[int, int]]:
    """[start, stop) entity-row ranges of about `rows_per_bucket` events each (an entity
    larger than that is a bucket of its own)."""
    bounds, start, rows = [], 0, 0
    for i, n in enumerate(n_events.to_list()):
        if rows and rows + n > rows_per_bucket:
            bounds.append((start, i))
            start, rows = i, 0
        rows += n
    bounds.append((start, len(n_events)))
    return bounds


def _bucket_events(events: pl.LazyFrame, entities: pl.DataFrame) -> pl.DataFrame:
    """One bucket's events, sorted, with the assigned split in place of the source's."""
    first, last = entities["entity"][0], entities["entity"][-1]
    in_range = (pl.col("entity") >= first) & (pl.col("entity") <= last)
    rows = sorted_events(events.filter(in_range)).collect(engine="streaming")
    return rows.drop("split").join(
        entities.select("entity", "split"), on="entity", how="left", maintain_order="left"
    )


def _fit_vocabulary(
    events: pl.LazyFrame,
    entities: pl.DataFrame,
    buckets: list[tuple[int, int]],
    scheme: TokenScheme,
    work: Path,
    progress: Progress,
) -> Vocabulary:
    fitter = VocabularyFitter(scheme)
    train = pl.col("split") == "train"
    progress.start("reading events", total=len(buckets))
    for b, (start, stop) in enumerate(buckets):
        rows = _bucket_events(events, entities[start:stop])
        rows.write_parquet(_work_file(work, b))
        fitter.add_values(rows.filter(train))
        progress.advance()
    progress.finish()
    fitter.finish_values()
    progress.start("counting train tokens", total=len(buckets))
    for b in range(len(buckets)):
        fitter.add_tokens(pl.scan_parquet(_work_file(work, b), glob=False).filter(train).collect())
        progress.advance()
    progress.finish()
    return Vocabulary.from_fitted(scheme, fitter.result())


def _write_tokens(
    vocab: Vocabulary,
    entities: pl.DataFrame,
    buckets: list[tuple[int, int]],
    work: Path,
    folder: Path,
    has_times: bool,
    progress: Progress,
) -> tuple[np.ndarray, int]:
    """Append every bucket's ids (and times) to the token files; returns the lengths and
    the number of events whose label spelled a scheme token (they became unknowns)."""
    lengths = []
    reserved = 0
    dtype = vocab.token_dtype
    progress.start("writing tokens", total=len(buckets))
    with open(folder / TOKENS_FILE, "wb") as token_file:
        times_file = open(folder / TIMES_FILE, "wb") if has_times else None  # noqa: SIM115
        try:
            for b, (start, stop) in enumerate(buckets):
                encoded = vocab.encode_events(pl.scan_parquet(_work_file(work, b), glob=False))
                if not encoded.entities.equals(entities["entity"][start:stop]):
                    raise CorpusError("internal: token rows out of entity order")
                token_file.write(encoded.ids.astype(dtype).tobytes())
                if times_file is not None:
                    times_file.write(_finite_times(encoded).tobytes())
                lengths.append(encoded.lengths)
                reserved += encoded.reserved_labels
                progress.advance()
        finally:
            if times_file is not None:
                times_file.close()
    progress.finish()
    return np.concatenate(lengths), reserved


def _finite_times(encoded: EncodedSequences) -> np.ndarray:
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


def _work_file(work: Path, bucket: int) -> Path:
    return work / f"bucket-{bucket:06d}.parquet"
