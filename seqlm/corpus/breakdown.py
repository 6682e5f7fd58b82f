"""Counts of sequences, events and tokens by any index columns (`corpus info --by`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from seqlm.corpus.store import Corpus, load_corpus
from seqlm.errors import CorpusError


def counts_by(corpus: Corpus | str | Path, columns: Sequence[str]) -> pl.DataFrame:
    """One row per combination of `columns`: sequences, events (when the index records
    them) and tokens, sorted by the columns."""
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    index = corpus.index
    missing = [c for c in columns if c not in index.columns]
    if missing:
        raise CorpusError(
            f"{corpus.path}: index has no column(s) {', '.join(missing)}; "
            f"columns: {', '.join(index.columns)}"
        )
    aggregations = [pl.len().alias("sequences")]
    if "events" in index.columns:
        aggregations.append(pl.col("events").sum())
    aggregations.append(pl.col("length").sum().alias("tokens"))
    return index.group_by(list(columns)).agg(aggregations).sort(list(columns), nulls_last=True)
