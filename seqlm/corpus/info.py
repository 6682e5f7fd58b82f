"""`corpus_info`: what `seqlm corpus info DIR` shows, as plain values.

Counts per split and group, vocabulary size, the most frequent tokens, sequence length
percentiles, rejects by reason, and for clinical-style corpora the share of unknown and
time tokens and the value-bin edges of the most frequent binned codes. The CLI renders
it; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.corpus.store import REJECTS_FILE, Corpus, load_corpus, read_parquet_file
from seqlm.corpus.window_time import WindowTimeCoverage, window_time_coverage

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
# Context lengths whose record-time coverage `corpus info` reports unless asked for others.
WINDOW_CONTEXTS = (128, 512, 2048)
# Tokens counted per chunk of tokens.bin, so counting never loads the whole file.
COUNT_CHUNK = 1 << 24


@dataclass(frozen=True)
class SplitCounts:
    split: str
    sequences: int
    tokens: int


@dataclass(frozen=True)
class GroupCounts:
    split: str
    group: str | None
    sequences: int
    tokens: int


@dataclass(frozen=True)
class TokenCount:
    token: str
    count: int
    share: float


@dataclass(frozen=True)
class CodeBins:
    """A binned code, how many tokens carry it, and its inner bin edges."""

    code: str
    tokens: int
    edges: tuple[float, ...]


@dataclass(frozen=True)
class CorpusInfo:
    path: str
    adapter: str
    created: str
    seqlm_version: str
    vocab_size: int
    token_dtype: str
    merged_tokens: int
    # None when the manifest does not record them (then nothing can be said to balance).
    rows_read: int | None
    events: int | None
    rejects: int | None
    sequences: int
    tokens: int
    splits: tuple[SplitCounts, ...]
    groups: tuple[GroupCounts, ...]
    top_tokens: tuple[TokenCount, ...]
    length_percentiles: dict[int, float]
    mean_tokens_per_sequence: float
    rejects_by_reason: dict[str, int]
    unknown_share: float
    time_token_share: float
    binned_codes: tuple[CodeBins, ...]
    # Events whose label spelled a scheme token ([PAD], VALUE//Q3, ...) or was empty and
    # so became an unknown; None for corpora written before it was counted.
    reserved_labels: int | None = None
    # Duplicate (entity, time, code) rows and time restarts (`corpus.merge_checks`);
    # empty for corpora written before the checks existed.
    merge_checks: dict[str, int] = field(default_factory=dict)
    # What times count: "s" (seconds) or "index" (unitless: beats, steps, positions).
    time_unit: str = "s"
    # What the adapter said at ingest (label counts, a likely intro note).
    notes: tuple[str, ...] = ()
    # Record time a training window of each context covers, train split (timed corpora):
    # WindowTimeCoverage.to_dict() rows, so a user sees what a context can reach.
    window_time: tuple[dict, ...] = ()
    # What became of text and numeric values (manifest `values`: text_values.fate_counts);
    # empty for corpora written before they were counted.
    values: dict[str, int] = field(default_factory=dict)

    def window_time_sentences(self) -> list[str]:
        return [WindowTimeCoverage(**row).sentence() for row in self.window_time]

    @property
    def rows_balance(self) -> str:
        """`ok`, `MISMATCH`, or `not recorded` when the manifest has no counts."""
        if self.rows_read is None or self.events is None or self.rejects is None:
            return "not recorded"
        return "ok" if self.rows_read == self.events + self.rejects else "MISMATCH"


def token_counts(corpus: Corpus) -> np.ndarray:
    """How often each id occurs in the whole corpus (int64, length vocab_size)."""
    counts = np.zeros(corpus.vocab_size, dtype=np.int64)
    for start in range(0, len(corpus.tokens), COUNT_CHUNK):
        chunk = np.asarray(corpus.tokens[start : start + COUNT_CHUNK])
        counts += np.bincount(chunk, minlength=corpus.vocab_size)[: corpus.vocab_size]
    return counts


def corpus_info(
    path: str | Path,
    top: int = 20,
    binned_codes: int = 10,
    contexts: tuple[int, ...] = WINDOW_CONTEXTS,
) -> CorpusInfo:
    """Summarise a corpus folder (reads the index, rejects and one pass over tokens);
    `contexts`: window lengths whose record-time coverage is reported (timed corpora)."""
    corpus = load_corpus(path)
    vocab = corpus.vocabulary
    index = corpus.index
    manifest = corpus.manifest
    counts = token_counts(corpus)
    total = int(counts.sum())

    per_split = index.group_by("split").agg(pl.len(), pl.col("length").sum()).sort("split")
    per_group = (
        index.group_by("split", "group")
        .agg(pl.len(), pl.col("length").sum())
        .sort("split", "group", nulls_last=True)
    )
    order = np.argsort(-counts, kind="stable")[:top]
    top_tokens = tuple(
        TokenCount(vocab.tokens[i], int(counts[i]), float(counts[i] / total)) for i in order
    )
    lengths = index["length"].to_numpy()
    roles = np.array(vocab.roles)

    code_tokens: dict[str, int] = {}
    for token, entry in vocab.data_tokens.items():
        if entry.code in vocab.value_bins:
            code_tokens[entry.code] = code_tokens.get(entry.code, 0) + int(
                counts[vocab.token_to_id[token]]
            )
    frequent = sorted(code_tokens.items(), key=lambda item: (-item[1], item[0]))[:binned_codes]

    rejects_path = corpus.path / REJECTS_FILE
    rejects_by_reason: dict[str, int] = {}
    if rejects_path.is_file():
        rejects = read_parquet_file(rejects_path, columns=["reason"])
        reasons = rejects.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
        rejects_by_reason = dict(zip(reasons["reason"], reasons["len"], strict=True))

    manifest_counts = manifest.get("counts", {})
    return CorpusInfo(
        path=str(corpus.path),
        adapter=str(manifest.get("source", {}).get("adapter", "")),
        created=str(manifest.get("created", "")),
        seqlm_version=str(manifest.get("seqlm_version", "")),
        vocab_size=corpus.vocab_size,
        token_dtype=str(manifest.get("token_dtype", "")),
        merged_tokens=vocab.merged_tokens,
        rows_read=_count(manifest_counts, "rows_read"),
        events=_count(manifest_counts, "events"),
        rejects=_count(manifest_counts, "rejects"),
        sequences=index.height,
        tokens=total,
        splits=tuple(SplitCounts(s, int(n), int(t)) for s, n, t in per_split.iter_rows()),
        groups=tuple(GroupCounts(s, g, int(n), int(t)) for s, g, n, t in per_group.iter_rows()),
        top_tokens=top_tokens,
        length_percentiles={p: float(np.percentile(lengths, p)) for p in PERCENTILES},
        mean_tokens_per_sequence=float(lengths.mean()),
        rejects_by_reason=rejects_by_reason,
        unknown_share=float(counts[roles == "unknown"].sum() / total),
        time_token_share=float(counts[roles == "time"].sum() / total),
        binned_codes=tuple(CodeBins(c, n, vocab.value_bins[c].edges) for c, n in frequent),
        reserved_labels=_count(manifest_counts, "reserved_labels"),
        merge_checks=dict(manifest.get("merge_checks", {})),
        time_unit=corpus.time_unit,
        notes=tuple(manifest.get("notes", [])),
        values={k: v for k, v in manifest.get("values", {}).items() if isinstance(v, int)},
        window_time=tuple(
            coverage.to_dict()
            for coverage in (window_time_coverage(corpus, c) for c in contexts)
            if coverage is not None
        ),
    )


def _count(counts: Any, key: str) -> int | None:
    value = counts.get(key) if isinstance(counts, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
