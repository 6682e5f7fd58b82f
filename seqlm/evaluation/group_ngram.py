"""N-grams fitted per group (bird, site, ...): the baseline a pooled model must beat.

A model trained on every group at once is often compared with the pooled n-gram, but an
n-gram fitted to each group's own train sequences is the stronger reference when groups
differ (each bird sings its own syntax): FinchGPT's per-bird setting. Each group's order
is chosen on that group's tuning sequences, as the pooled one is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any

import numpy as np
import polars as pl

from seqlm.errors import CorpusError
from seqlm.evaluation.baselines import BaselineOptions, fit_baselines
from seqlm.evaluation.scores import Scorer, TokenScores

GROUP_NGRAM_NAME = "per-group n-gram"


def _sequences(corpus: Any, rows: pl.DataFrame) -> list[np.ndarray]:
    return [np.asarray(corpus.sequence(int(i))) for i in rows["seq_id"].to_list()]


def best_ngram_on(
    corpus: Any,
    rows: pl.DataFrame,
    *,
    train_split: str = "train",
    tuning_split: str = "tuning",
    max_order: int = 8,
    name: str = "",
) -> tuple[Scorer, int]:
    """The Kneser-Ney n-gram fitted on the `train_split` sequences among `rows`, its
    order chosen on their `tuning_split` sequences; returns it and the order."""
    train = _sequences(corpus, rows.filter(pl.col("split") == train_split))
    tuning = _sequences(corpus, rows.filter(pl.col("split") == tuning_split))
    if not any(len(s) > 1 for s in train):
        raise CorpusError(f"{corpus.path}: no {train_split} sequences for {name}")
    if not any(len(s) > 1 for s in tuning):
        raise CorpusError(f"{corpus.path}: no {tuning_split} sequences to choose {name}'s order")
    options = BaselineOptions(
        ngram_orders=(), max_order=max_order, include_uniform=False, include_unigram=False
    )
    context_only = getattr(getattr(corpus, "vocabulary", None), "condition_ids", ())
    fitted = fit_baselines(train, corpus.vocab_size, tuning, options, None, context_only)
    assert fitted.selection is not None  # tuning sequences were given
    return fitted.scorers[-1], fitted.selection.best_order


def per_group_ngram_scores(
    corpus: Any,
    index: pl.DataFrame,
    sequences: list[np.ndarray],
    fit_rows: pl.DataFrame,
    *,
    group: str = "group",
    train_split: str = "train",
    tuning_split: str = "tuning",
    max_order: int = 8,
) -> tuple[TokenScores, dict[str, int]]:
    """Score `sequences` (described by `index` rows) each with the n-gram of its own
    group, fitted on that group's rows of `fit_rows`; returns the scores in sequence
    order and each group's order. Raises `CorpusError` when a group has no train or
    tuning sequences there."""
    groups = index[group].cast(pl.String).fill_null("").to_numpy()
    parts: list[TokenScores] = []
    orders: dict[str, int] = {}
    for name in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == name)
        rows = fit_rows.filter(pl.col(group).cast(pl.String).fill_null("") == name)
        ngram, orders[name] = best_ngram_on(
            corpus,
            rows,
            train_split=train_split,
            tuning_split=tuning_split,
            max_order=max_order,
            name=f"{group} {name!r}",
        )
        scored = ngram.score([sequences[i] for i in members])
        parts.append(dataclasses.replace(scored, sequence=members[scored.sequence]))
    merged = TokenScores.concat(parts)
    order = np.lexsort((merged.position, merged.sequence))  # back to sequence order
    fields_in_order = {f.name: getattr(merged, f.name)[order] for f in fields(TokenScores)}
    return TokenScores(**fields_in_order), orders


def has_groups(index: pl.DataFrame, group: str = "group") -> bool:
    """Whether the index names at least two groups (else a per-group n-gram is the
    pooled one)."""
    return group in index.columns and index[group].drop_nulls().n_unique() >= 2


def group_ngram_baseline(
    corpus: Any,
    index: pl.DataFrame,
    sequences: list[np.ndarray],
    info: dict[str, Any],
    *,
    group: str = "group",
    train_split: str = "train",
    tuning_split: str = "tuning",
    max_order: int = 8,
) -> dict[str, TokenScores]:
    """`{GROUP_NGRAM_NAME: scores}` of the evaluated sequences, each group's n-gram fitted
    on its rows of the whole corpus; empty (and why, in `info["group_ngram"]`) when the
    index has fewer than two groups or a group has no train or tuning sequences."""
    if not has_groups(index, group):
        return {}
    try:
        scores, orders = per_group_ngram_scores(
            corpus,
            index,
            sequences,
            corpus.index,
            group=group,
            train_split=train_split,
            tuning_split=tuning_split,
            max_order=max_order,
        )
    except CorpusError as error:  # a group without train or tuning data: say so, go on
        info["group_ngram"] = {"skipped": str(error)}
        return {}
    info["group_ngram"] = {"column": group, "orders": orders}
    return {GROUP_NGRAM_NAME: scores}
