"""The cheap baselines every model is reported beside, all behind the `Scorer` interface.

- `UniformBaseline`: every predictable id (all but `[PAD]` and `[BOS]`) equally likely.
- `UnigramBaseline`: train frequencies with add-one (Laplace) smoothing over the
  predictable ids, so ids unseen in training keep a finite probability.
- n-grams (`seqlm.evaluation.ngram.KneserNeyModel`): fixed orders, plus the *best*
  n-gram, the order 1..max_order with the lowest tuning-split perplexity.

All are fitted on the train split and scored on the same held-out tokens as the model,
so a reader sees at once whether a transformer learned more than a Markov chain.
(The LSTM baseline needs the trainer and is not here yet.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.ngram import DEFAULT_MAX_ORDER, KneserNeyModel, NgramCounts, count_ngrams
from seqlm.evaluation.scores import (
    NEVER_PREDICTED_IDS,
    Scorer,
    TokenScores,
    prediction_targets,
    scores_from_fixed_distribution,
)
from seqlm.progress import Progress


def _predictable(vocab_size: int, excluded: Sequence[int] = ()) -> np.ndarray:
    """Ids a baseline may predict: all but [PAD], [BOS] and `excluded` (conditioning
    tokens, context only: the GPT is never trained to predict them either)."""
    mask = np.ones(vocab_size, dtype=bool)
    mask[[i for i in (*NEVER_PREDICTED_IDS, *excluded) if 0 <= i < vocab_size]] = False
    return mask


@dataclass(frozen=True)
class UniformBaseline:
    """Random guessing over the predictable ids: perplexity = their number."""

    vocab_size: int
    name: str = "uniform"
    excluded: tuple[int, ...] = ()

    def distribution(self) -> np.ndarray:
        mask = _predictable(self.vocab_size, self.excluded)
        return mask / mask.sum()

    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores:
        targets = prediction_targets(sequences, self.vocab_size)
        return scores_from_fixed_distribution(targets, self.distribution())


@dataclass(frozen=True)
class UnigramBaseline:
    """Train-split token frequencies, add-one smoothed over the predictable ids:
    P(w) = (count(w) + 1) / (n_train_targets + n_predictable)."""

    probabilities: np.ndarray
    name: str = "unigram"

    @classmethod
    def fit(
        cls,
        sequences: Sequence[np.ndarray],
        vocab_size: int,
        context_only_ids: Sequence[int] | np.ndarray = (),
    ) -> UnigramBaseline:
        """Fit on every target except `context_only_ids` (given no probability)."""
        excluded = [int(i) for i in np.asarray(context_only_ids).reshape(-1)]
        targets = prediction_targets(sequences, vocab_size).without_tokens(excluded)
        mask = _predictable(vocab_size, excluded)
        counts = np.bincount(targets.token, minlength=vocab_size) + mask
        return cls(probabilities=counts / counts.sum())

    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores:
        targets = prediction_targets(sequences, self.probabilities.shape[0])
        return scores_from_fixed_distribution(targets, self.probabilities)


@dataclass(frozen=True)
class OrderSelection:
    """The n-gram order with the lowest tuning perplexity, and every order's perplexity."""

    best_order: int
    tuning_perplexity: dict[int, float]


def select_ngram_order(
    counts: NgramCounts,
    tuning_sequences: Sequence[np.ndarray],
    orders: Sequence[int] | None = None,
    context_only_ids: Sequence[int] | np.ndarray = (),
) -> OrderSelection:
    """Pick the order (default 1..counts.max_order) that best predicts the tuning split.

    Ties go to the lower order; only true-token probabilities are needed, so this is
    cheap even for large vocabularies. Targets whose true id is in `context_only_ids`
    (conditioning tokens) are not counted in the tuning perplexity.
    """
    orders = list(orders) if orders is not None else list(range(1, counts.max_order + 1))
    if not orders:
        raise ConfigError("select_ngram_order needs at least one order")
    if not any(len(s) > 1 for s in tuning_sequences):
        raise ConfigError("the tuning split has no tokens to predict; cannot pick an order")
    true_ids = prediction_targets(tuning_sequences, counts.vocab_size).token
    counted = ~np.isin(true_ids, np.asarray(context_only_ids, dtype=np.int64))
    if not counted.any():
        raise ConfigError("the tuning split has only conditioning tokens; cannot pick an order")
    perplexity = {
        order: float(
            np.exp(-KneserNeyModel(counts, order).log_prob(tuning_sequences)[counted].mean())
        )
        for order in orders
    }
    best = min(orders, key=lambda order: (perplexity[order], order))
    return OrderSelection(best_order=best, tuning_perplexity=perplexity)


@dataclass
class BaselineOptions:
    """Which baselines to fit.

    `ngram_orders` are always reported; the best order among 1..`max_order` is added
    (named `best n-gram`) when tuning sequences are given.
    """

    ngram_orders: tuple[int, ...] = (2, 4)
    max_order: int = DEFAULT_MAX_ORDER
    include_uniform: bool = True
    include_unigram: bool = True

    def __post_init__(self) -> None:
        self.ngram_orders = tuple(self.ngram_orders)
        if self.max_order < 1:
            raise ConfigError(f"baselines.max_order must be at least 1, got {self.max_order}")
        bad = [n for n in self.ngram_orders if not 1 <= n <= self.max_order]
        if bad:
            raise ConfigError(
                f"baselines.ngram_orders must lie in 1..max_order ({self.max_order}), got {bad}"
            )


@dataclass
class FittedBaselines:
    scorers: list[Scorer]
    selection: OrderSelection | None = None
    counts: NgramCounts | None = field(default=None, repr=False)


def fit_baselines(
    train_sequences: Sequence[np.ndarray],
    vocab_size: int,
    tuning_sequences: Sequence[np.ndarray] | None = None,
    options: BaselineOptions | None = None,
    progress: Progress | None = None,
    context_only_ids: Sequence[int] | np.ndarray = (),
) -> FittedBaselines:
    """Fit uniform, unigram and Kneser-Ney n-grams on the train sequences.

    One n-gram count pass serves every order. Without tuning sequences (or with none
    holding a token to predict) no best order is chosen and only the fixed orders appear.
    `context_only_ids` (conditioning tokens) are never a target: not counted, given no
    probability, and left out of the best order's tuning perplexity.
    """
    options = options or BaselineOptions()
    excluded = tuple(int(i) for i in np.asarray(context_only_ids).reshape(-1))
    scorers: list[Scorer] = []
    if options.include_uniform:
        scorers.append(UniformBaseline(vocab_size, excluded=excluded))
    if options.include_unigram:
        scorers.append(UnigramBaseline.fit(train_sequences, vocab_size, excluded))
    tuning = list(tuning_sequences) if tuning_sequences is not None else []
    has_tuning = any(len(s) > 1 for s in tuning)
    top = options.max_order if has_tuning else max(options.ngram_orders, default=0)
    if top == 0:
        return FittedBaselines(scorers)
    counts = count_ngrams(train_sequences, vocab_size, top, progress, excluded)
    scorers.extend(KneserNeyModel(counts, order) for order in options.ngram_orders)
    selection = None
    if has_tuning:
        selection = select_ngram_order(counts, tuning, context_only_ids=context_only_ids)
        best_name = f"best n-gram ({selection.best_order}-gram KN)"
        scorers.append(KneserNeyModel(counts, selection.best_order, name=best_name))
    return FittedBaselines(scorers, selection, counts)


class SequenceSource(Protocol):
    """What baselines need from a corpus (`seqlm.corpus.Corpus` provides it)."""

    @property
    def vocab_size(self) -> int: ...

    def split(self, name: str) -> pl.DataFrame: ...

    def sequence(self, seq_id: int) -> np.ndarray: ...


def split_sequences(
    corpus: SequenceSource, splits: str | Sequence[str]
) -> tuple[pl.DataFrame, list[np.ndarray]]:
    """Index rows of the named splits (in that order) and their token arrays; row i of
    the frame describes sequence i, matching `TokenScores.sequence`."""
    names = [splits] if isinstance(splits, str) else list(splits)
    index = pl.concat([corpus.split(name) for name in names], how="vertical")
    sequences = [np.asarray(corpus.sequence(int(i))) for i in index["seq_id"].to_list()]
    return index, sequences


@dataclass
class BaselineEvaluation:
    """Every baseline's scores on the same evaluation tokens, with their index rows."""

    index: pl.DataFrame
    scores: dict[str, TokenScores]
    selection: OrderSelection | None


def evaluate_baselines(
    corpus: SequenceSource,
    eval_splits: str | Sequence[str] = "held_out",
    options: BaselineOptions | None = None,
    train_split: str = "train",
    tuning_split: str = "tuning",
    progress: Progress | None = None,
) -> BaselineEvaluation:
    """Fit the baselines on `train_split` (order chosen on `tuning_split`) and score the
    evaluation splits."""
    _, train = split_sequences(corpus, train_split)
    if not any(len(s) > 1 for s in train):
        raise CorpusError(f"split {train_split!r} has no tokens to fit baselines on")
    _, tuning = split_sequences(corpus, tuning_split)
    context_only = getattr(getattr(corpus, "vocabulary", None), "condition_ids", [])
    fitted = fit_baselines(train, corpus.vocab_size, tuning, options, progress, context_only)
    index, sequences = split_sequences(corpus, eval_splits)
    scores = {
        scorer.name: scorer.score(sequences, progress).without_tokens(context_only)
        for scorer in fitted.scorers
    }
    return BaselineEvaluation(index=index, scores=scores, selection=fitted.selection)
