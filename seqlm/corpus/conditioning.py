"""Conditioning tokens: a sequence's index attributes as a prefix of context-only tokens.

`condition_corpus(corpus, out, ["group"])` writes a corpus whose every sequence reads
`[BOS] [COND//group=bird3] syllables ... [EOS]`: the model pooled over birds (or sites,
conditions, sexes, age groups: any index column) is told which one it is reading, and
can share what the groups have in common while keeping what is each group's own.

Conditioning tokens are tokens of their own kind (`Vocabulary.condition_ids`, role
`condition`): context only. The loader never makes them a training target, every
evaluation drops them from the scored targets (the GPT, the LSTM and the n-grams are
scored on the identical set), and sampling never generates them.

The vocabulary is the source's, byte for byte, with the conditioning tokens appended, so
every source token keeps its id (a run on the unconditioned corpus can `--init` a run
on this one). A value gets a token of its own when at least `min_sequences` train
sequences carry it (identifiers and rare values never become tokens); other values and
missing ones read `[COND//column=other]`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.artefacts import record_files
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
from seqlm.corpus.subset import _token_positions
from seqlm.errors import ConfigError
from seqlm.outputs import (
    check_output,
    clean_stale_staging,
    move_into_place,
    new_staging,
    output_lock,
)
from seqlm.vocabularies.scheme import CONDITION_TOKEN_PREFIX, SPACE_MARK
from seqlm.vocabularies.vocabulary import Vocabulary

OTHER = "other"
DEFAULT_MIN_SEQUENCES = 5
# Index columns that identify a sequence or locate it, never a condition.
_NOT_ATTRIBUTES = ("seq_id", "entity", "split", "offset", "length", "first_time", "last_time")


def condition_token(column: str, value: str) -> str:
    """`[COND//column=value]`, whitespace written as the vocabulary's space mark."""
    text = f"{CONDITION_TOKEN_PREFIX}{column}={value}]"
    return "".join(SPACE_MARK if c.isspace() else c for c in text)


def _column_values(index: pl.DataFrame, column: str) -> list[str]:
    return [OTHER if v is None else str(v) for v in index[column].to_list()]


def _tokens_for(index: pl.DataFrame, column: str, min_sequences: int) -> dict[str, str]:
    """Value -> token for the values with enough train sequences."""
    train = index.filter(pl.col("split") == "train")
    counts: dict[str, int] = {}
    for value in _column_values(train, column):
        counts[value] = counts.get(value, 0) + 1
    return {v: condition_token(column, v) for v, n in sorted(counts.items()) if n >= min_sequences}


def condition_corpus(
    corpus: Corpus | str | Path,
    out: str | Path,
    attributes: Sequence[str],
    *,
    min_sequences: int = DEFAULT_MIN_SEQUENCES,
    overwrite: bool = False,
) -> Corpus:
    """Write `corpus` with the `attributes` columns' values as a prefix of each sequence."""
    source = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    out = Path(out)
    attributes = list(dict.fromkeys(attributes))
    if not attributes:
        raise ConfigError("conditioning needs at least one index column (--on group)")
    for column in attributes:
        if column not in source.index.columns or column in _NOT_ATTRIBUTES:
            usable = [c for c in source.index.columns if c not in _NOT_ATTRIBUTES]
            raise ConfigError(f"cannot condition on {column!r}; index attributes: {usable}")
    if len(source.vocabulary.condition_ids):
        raise ConfigError(f"{source.path}: already a conditioned corpus")
    if out.resolve() == Path(source.path).resolve():
        raise ConfigError(f"{out}: a conditioned corpus cannot replace its source")
    with output_lock(out, "seqlm corpus condition"):
        check_output(out, [source.path], overwrite=overwrite, own_names=CORPUS_FILES)
        clean_stale_staging(out.parent)
        _condition_locked(source, out, attributes, min_sequences, overwrite)
    return load_corpus(out)


def _condition_locked(
    source: Corpus, out: Path, attributes: list[str], min_sequences: int, overwrite: bool
) -> None:
    index = source.index
    tables = {c: _tokens_for(index, c, min_sequences) for c in attributes}
    new_tokens: list[str] = []
    for column in attributes:
        new_tokens.extend(tables[column].values())
        new_tokens.append(condition_token(column, OTHER))
    new_tokens = list(dict.fromkeys(new_tokens))
    old = source.vocabulary
    vocabulary = Vocabulary(
        old.scheme, old.tokens + tuple(new_tokens), old.data_tokens, old.value_bins,
        old.merged_tokens, old.support,
    )  # fmt: skip
    ids = vocabulary.token_to_id
    prefix = np.stack(
        [
            np.array(
                [
                    ids[tables[c].get(v, condition_token(c, OTHER))]
                    for v in _column_values(index, c)
                ],
                dtype=np.int64,
            )
            for c in attributes
        ],
        axis=1,
    )  # (sequences, k)
    _write(source, out, vocabulary, prefix, attributes, min_sequences, overwrite)


def _interleave(source: Corpus, prefix: np.ndarray, values: np.ndarray, fill: np.ndarray):
    """Each sequence's first value, then its prefix (`fill` per row), then the rest."""
    lengths = source.index["length"].to_numpy().astype(np.int64)
    k = prefix.shape[1]
    new_lengths = lengths + k
    new_offsets = np.concatenate([[0], np.cumsum(new_lengths)[:-1]])
    result = np.empty(int(new_lengths.sum()), dtype=values.dtype)
    # where each old token lands: position p of sequence s -> new_offset + p (+k if p>0)
    old_positions = _token_positions(np.zeros_like(lengths), lengths)  # p within sequence
    owner = np.repeat(np.arange(lengths.size), lengths)
    target = new_offsets[owner] + old_positions + np.where(old_positions > 0, k, 0)
    result[target] = values
    slots = new_offsets[:, None] + 1 + np.arange(k)[None, :]
    result[slots.ravel()] = fill.ravel().astype(values.dtype)
    return result, new_lengths, new_offsets


def _write(source, out, vocabulary, prefix, attributes, min_sequences, overwrite) -> None:
    tokens = np.asarray(source.tokens).astype(np.int64)
    new_tokens, new_lengths, new_offsets = _interleave(source, prefix, tokens, prefix)
    index = source.index.with_columns(
        pl.Series("offset", new_offsets.astype(np.int64)),
        pl.Series("length", new_lengths).cast(source.index["length"].dtype),
    )
    staging = new_staging(out)
    try:
        new_tokens.astype(vocabulary.token_dtype).tofile(staging / TOKENS_FILE)
        if source.times is not None:
            times = np.asarray(source.times)
            first = times[source.index["offset"].to_numpy()]
            fill = np.repeat(first[:, None], prefix.shape[1], axis=1)
            new_times, _, _ = _interleave(source, prefix, times, fill)
            new_times.astype(np.float32).tofile(staging / TIMES_FILE)
        index.write_parquet(staging / INDEX_FILE)
        vocabulary.save(staging)
        manifest = _manifest(source, vocabulary, index, attributes, min_sequences)
        # New token and index files: the source's checksums would fail verification.
        manifest["files"] = record_files(staging, CHECKSUMMED_FILES)
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=1, default=str), encoding="utf-8"
        )
        move_into_place(staging, out, overwrite=overwrite, own_names=CORPUS_FILES)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _manifest(source, vocabulary, index, attributes, min_sequences) -> dict:
    manifest = json.loads(json.dumps(source.manifest, default=str))
    manifest["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    manifest["token_dtype"] = np.dtype(vocabulary.token_dtype).name
    manifest.setdefault("vocabulary", {})
    manifest["vocabulary"].update({"hash": vocabulary.hash, "size": len(vocabulary)})
    counts = manifest.setdefault("counts", {})
    per_split = index.group_by("split").agg(pl.col("length").sum())
    counts["tokens"] = int(index["length"].sum())
    counts["tokens_per_split"] = dict(
        zip(per_split["split"].to_list(), [int(x) for x in per_split["length"]], strict=True)
    )
    manifest["conditioning"] = {
        "source": str(Path(source.path).resolve()),
        "attributes": list(attributes),
        "tokens": int(len(vocabulary.condition_ids)),
        "min_sequences": min_sequences,
    }
    return manifest
