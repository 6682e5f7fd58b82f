"""A corpus restricted to some of its sequences, written as a new corpus folder.

The lesion experiment trains on pre-lesion song only, and the trainer reads whole
splits of a corpus folder; `subset_corpus(corpus, out, {"condition": "pre"})` writes
the matching sequences (tokens, times, index rows with their splits and attributes) as
a corpus of their own with the *same* vocabulary, byte for byte, so a model trained on
the subset scores the full corpus's sequences with the same ids and the run's recorded
vocabulary hash matches both.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.artefacts import record_files
from seqlm.constants import TOKENIZER_FILE
from seqlm.corpus.store import (
    CHECKSUMMED_FILES,
    CORPUS_FILES,
    INDEX_FILE,
    MANIFEST_FILE,
    TIMES_FILE,
    TOKENS_FILE,
    Corpus,
    load_corpus,
)
from seqlm.errors import ConfigError, CorpusError
from seqlm.events import SPLITS
from seqlm.outputs import (
    check_output,
    clean_stale_staging,
    move_into_place,
    new_staging,
    output_lock,
)

# Files of the vocabulary, copied unchanged (the tokenizer's hash names the vocabulary).
VOCABULARY_FILES = (TOKENIZER_FILE, "scheme.json")
# Columns the subset recomputes; every other index column is carried over.
_RENUMBERED = ("seq_id", "offset")

WhereValue = str | int | float | bool | None | Sequence[str | int | float | bool | None]


def parse_where(items: Sequence[str]) -> dict[str, list[str]]:
    """`column=value` strings (the CLI's `--where`) to a filter; `a=x,y` means x or y,
    and a column given twice accepts either value."""
    where: dict[str, list[str]] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise ConfigError(f"--where needs column=value, got {item!r}")
        where.setdefault(column.strip(), []).extend(v.strip() for v in value.split(","))
    return where


# Values listed when a filter matches nothing; more than this and the count is given.
SHOWN_VALUES = 20


def _present(corpus: Corpus, where: Mapping[str, WhereValue]) -> str:
    """`; group has: a, b` for each filtered column, so a typo shows at once. Entity
    names are identifiers (clinical subjects): only their count is given."""
    parts = []
    for column in where:
        values = corpus.index[column].drop_nulls().cast(pl.String).unique().sort()
        if column == "entity" or values.len() > SHOWN_VALUES:
            parts.append(f"{column} has {values.len():,} distinct values")
        else:
            parts.append(f"{column} has: {', '.join(values.to_list())}")
    return "; " + "; ".join(parts) if parts else ""


def select_rows(index: pl.DataFrame, where: Mapping[str, WhereValue]) -> pl.DataFrame:
    """Index rows matching every condition (a value or a list of accepted values).
    Values are compared as strings, so `group=3` matches an integer or string column."""
    if not where:
        raise ConfigError("a subset needs at least one condition")
    keep = pl.lit(True)
    for column, accepted in where.items():
        if column not in index.columns:
            raise ConfigError(
                f"cannot filter on {column!r}: the corpus index has {', '.join(index.columns)}"
            )
        values = accepted if isinstance(accepted, list | tuple) else [accepted]
        strings = [str(v) for v in values if v is not None]
        condition = pl.col(column).cast(pl.String).is_in(strings)
        if any(v is None for v in values):
            condition = condition | pl.col(column).is_null()
        keep = keep & condition.fill_null(False)
    return index.filter(keep)


def subset_corpus(
    corpus: Corpus | str | Path,
    out: str | Path,
    where: Mapping[str, WhereValue],
    *,
    overwrite: bool = False,
) -> Corpus:
    """Write the sequences whose index rows match `where` as a corpus folder at `out`.

    Sequences keep their order, split and attributes; `seq_id` and `offset` are
    renumbered. The manifest records the source corpus and the filter under `subset`.
    Raises `CorpusError` when nothing matches.
    """
    source = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    out = Path(out)
    with output_lock(out, "seqlm subset"):
        check_output(out, [source.path], overwrite=overwrite, own_names=CORPUS_FILES)
        clean_stale_staging(out.parent)
        return _write_subset(source, out, where, overwrite)


def _write_subset(
    source: Corpus, out: Path, where: Mapping[str, WhereValue], overwrite: bool
) -> Corpus:
    rows = select_rows(source.index, where)
    if rows.height == 0:
        raise CorpusError(
            f"{source.path}: no sequence matches {dict(where)}{_present(source, where)}"
        )
    lengths = rows["length"].to_numpy().astype(np.int64)
    gather = _token_positions(rows["offset"].to_numpy().astype(np.int64), lengths)
    index = rows.with_columns(
        pl.Series("seq_id", np.arange(rows.height, dtype=np.int64)),
        pl.Series("offset", np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)),
    )
    staging = new_staging(out)
    try:
        np.asarray(source.tokens[gather]).tofile(staging / TOKENS_FILE)
        if source.times is not None:
            np.asarray(source.times[gather]).tofile(staging / TIMES_FILE)
        index.write_parquet(staging / INDEX_FILE)
        for name in VOCABULARY_FILES:
            if (Path(source.path) / name).is_file():
                shutil.copyfile(Path(source.path) / name, staging / name)
        manifest = _subset_manifest(source, index, where)
        manifest["files"] = record_files(staging, CHECKSUMMED_FILES)
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=1, default=str), encoding="utf-8"
        )
        move_into_place(staging, out, overwrite=overwrite, own_names=CORPUS_FILES)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_corpus(out)


def _token_positions(offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions in tokens.bin of the given sequences, concatenated."""
    starts = np.repeat(offsets - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(int(lengths.sum()), dtype=np.int64)


def _subset_manifest(source: Corpus, index: pl.DataFrame, where: Mapping[str, WhereValue]) -> dict:
    manifest = json.loads(json.dumps(source.manifest, default=str))
    per_split = index.group_by("split").agg(pl.len(), pl.col("length").sum())
    sequences = dict(zip(per_split["split"], per_split["len"], strict=True))
    tokens = dict(zip(per_split["split"], per_split["length"], strict=True))
    counts = manifest.get("counts", {})
    # rows_read/events/rejects describe the source's ingest; they stay as they were and
    # `subset` says this corpus holds only part of those events.
    counts.update(
        {
            "sequences": index.height,
            "tokens": int(index["length"].sum()),
            "sequences_per_split": {s: int(sequences.get(s, 0)) for s in SPLITS},
            "tokens_per_split": {s: int(tokens.get(s, 0)) for s in SPLITS},
        }
    )
    manifest["counts"] = counts
    manifest["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    plain = {k: list(v) if isinstance(v, list | tuple) else v for k, v in where.items()}
    manifest["subset"] = {
        "source": str(Path(source.path).resolve()),
        "where": plain,
        "source_sequences": source.index.height,
    }
    return manifest
