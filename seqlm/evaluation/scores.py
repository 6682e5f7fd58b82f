"""Per-token scores: the one thing every model and baseline hands to the metrics.

A *scorer* (uniform, unigram, n-gram, later the GPT and the LSTM) reads corpus sequences
of token ids, each starting with `[BOS]` and ending with `[EOS]`, and scores every
predicted position: the token after `[BOS]` through `[EOS]` (`[BOS]` itself is never
predicted). For each it reports the log-probability of the true token and where the true
token ranks in the predicted distribution. Ranks are kept as two counts (ids strictly
more probable, ids exactly as probable) rather than top-k id lists, so top-k accuracy for
any k follows, with ties broken uniformly at random: a uniform guesser scores exactly
k / V, not 100%.

A model scorer only has to produce log-probability rows over the vocabulary for the
predicted positions (`prediction_targets` says which) and call
`token_scores_from_log_probs` per batch, then `TokenScores.concat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol

import numpy as np
import polars as pl

from seqlm.errors import ConfigError, CorpusError
from seqlm.progress import Progress
from seqlm.vocabularies.scheme import BOS_ID, PAD_ID

# Ids that are never a prediction target: `[PAD]` never occurs in a stored sequence and
# `[BOS]` only opens one. Baselines give them no probability.
NEVER_PREDICTED_IDS: tuple[int, ...] = (PAD_ID, BOS_ID)


@dataclass(frozen=True)
class PredictionTargets:
    """The predicted positions of a list of sequences, flattened in sequence order.

    `flat_tokens` is the concatenation of the sequences; `flat_index` points each target
    into it, and `sequence_start` gives the flat index of the target's sequence start, so
    a context of any length can be gathered (and padded with `[BOS]` at the start).
    """

    flat_tokens: np.ndarray  # int64, every token of every sequence
    flat_index: np.ndarray  # int64, per target: its index in flat_tokens
    sequence_start: np.ndarray  # int64, per target: flat index of its sequence's [BOS]
    sequence: np.ndarray  # int64, per target: index of its sequence in the input list
    position: np.ndarray  # int64, per target: position within its sequence (>= 1)
    token: np.ndarray  # int64, per target: the true id
    previous: np.ndarray  # int64, per target: the id just before it

    def __len__(self) -> int:
        return int(self.token.shape[0])

    def without_tokens(self, ids: np.ndarray | Sequence[int]) -> PredictionTargets:
        """These targets less those whose true id is in `ids` (conditioning tokens are
        context only, never a target); `flat_tokens` is kept, so contexts are unchanged."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return self
        keep = ~np.isin(self.token, ids)
        per_target = ("flat_index", "sequence_start", "sequence", "position", "token", "previous")
        return replace(self, **{name: getattr(self, name)[keep] for name in per_target})

    def context_token(self, distance: int) -> np.ndarray:
        """The id `distance` places before each target, `[BOS]` before the sequence start."""
        source = self.flat_index - distance
        inside = source >= self.sequence_start
        return np.where(inside, self.flat_tokens[np.maximum(source, 0)], BOS_ID)


def prediction_targets(sequences: Sequence[np.ndarray], vocab_size: int) -> PredictionTargets:
    """Validate sequences of token ids and list the positions a model must predict.

    Raises `CorpusError` (naming the sequence) when a sequence does not start with
    `[BOS]`, holds an id outside the vocabulary, or has `[PAD]`/`[BOS]` after position 0.
    """
    if vocab_size <= max(NEVER_PREDICTED_IDS) + 1:
        raise ConfigError(f"vocabulary size must exceed the special ids, got {vocab_size}")
    arrays = [np.asarray(seq).astype(np.int64, copy=False).reshape(-1) for seq in sequences]
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    for number, array in enumerate(arrays):
        if array.shape[0] == 0 or array[0] != BOS_ID:
            raise CorpusError(f"sequence {number} does not start with [BOS] (id {BOS_ID})")
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if arrays else lengths
    owner = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    position = np.arange(flat.shape[0], dtype=np.int64) - np.repeat(starts, lengths)

    bad = np.flatnonzero((flat < 0) | (flat >= vocab_size))
    if bad.size:
        at = int(bad[0])
        raise CorpusError(
            f"sequence {int(owner[at])} holds token id {int(flat[at])} at position "
            f"{int(position[at])}, outside the vocabulary of {vocab_size} ids"
        )
    is_target = position >= 1
    forbidden = np.flatnonzero(is_target & np.isin(flat, NEVER_PREDICTED_IDS))
    if forbidden.size:
        at = int(forbidden[0])
        raise CorpusError(
            f"sequence {int(owner[at])} holds special id {int(flat[at])} ([PAD] or [BOS]) "
            f"at position {int(position[at])}; only position 0 may hold [BOS]"
        )
    flat_index = np.flatnonzero(is_target).astype(np.int64)
    return PredictionTargets(
        flat_tokens=flat,
        flat_index=flat_index,
        sequence_start=np.repeat(starts, lengths)[flat_index],
        sequence=owner[flat_index],
        position=position[flat_index],
        token=flat[flat_index],
        previous=flat[flat_index - 1],
    )


@dataclass(frozen=True)
class TokenScores:
    """One entry per predicted token; every array has the same length.

    `n_greater` counts ids with strictly higher probability than the true token and
    `n_tied` the *other* ids with exactly its probability; `max_prob` is the top-1
    confidence (for calibration).
    """

    sequence: np.ndarray  # int64, index into the list of sequences that was scored
    position: np.ndarray  # int64, position of the predicted token in its sequence
    token: np.ndarray  # int64, the true id
    previous: np.ndarray  # int64, the id before it
    log_prob: np.ndarray  # float64, natural log-probability of the true id
    n_greater: np.ndarray  # int64
    n_tied: np.ndarray  # int64
    max_prob: np.ndarray  # float64

    def __post_init__(self) -> None:
        lengths = {f.name: getattr(self, f.name).shape[0] for f in fields(self)}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"token score arrays differ in length: {lengths}")

    def __len__(self) -> int:
        return int(self.token.shape[0])

    @classmethod
    def of_targets(
        cls,
        targets: PredictionTargets,
        log_prob: np.ndarray,
        n_greater: np.ndarray,
        n_tied: np.ndarray,
        max_prob: np.ndarray,
    ) -> TokenScores:
        """A scorer's figures for every target of `targets`, in their order."""
        return cls(
            sequence=targets.sequence,
            position=targets.position,
            token=targets.token,
            previous=targets.previous,
            log_prob=log_prob,
            n_greater=n_greater,
            n_tied=n_tied,
            max_prob=max_prob,
        )

    def top_k_hit(self, k: int) -> np.ndarray:
        """Chance that the true id is among the k most probable, ties broken at random.

        The true id sits below `n_greater` ids and among `n_tied + 1` equal ones; a random
        order of the tied group puts it in the first k with probability
        (k - n_greater) / (n_tied + 1), clipped to [0, 1].
        """
        if k < 1:
            raise ConfigError(f"top-k needs k >= 1, got {k}")
        return np.clip((k - self.n_greater) / (self.n_tied + 1.0), 0.0, 1.0)

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({f.name: getattr(self, f.name) for f in fields(self)})

    def without_tokens(self, ids: np.ndarray | Sequence[int]) -> TokenScores:
        """These scores less the targets whose true id is in `ids`: conditioning tokens
        (`Vocabulary.condition_ids`) are context only and never counted in a metric."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return self
        keep = ~np.isin(self.token, ids)
        return TokenScores(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence[TokenScores]) -> TokenScores:
        """Join batches scored in order (e.g. a model scored batch by batch)."""
        if not parts:
            return cls.empty()
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    @classmethod
    def empty(cls) -> TokenScores:
        ints = np.zeros(0, dtype=np.int64)
        floats = np.zeros(0, dtype=np.float64)
        return cls(ints, ints, ints, ints, floats, ints, ints, floats)


class Scorer(Protocol):
    """Anything that scores sequences of token ids: baselines now, the GPT later."""

    name: str

    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores: ...


def token_scores_from_log_probs(
    targets: PredictionTargets, log_probs: np.ndarray, rows: slice | np.ndarray | None = None
) -> TokenScores:
    """Score targets from full log-probability rows (one row per target, V columns).

    `rows` selects which targets `log_probs` belongs to (a batch); all of them when None.
    Ranks compare the rows themselves, so the true id's own entry is the reference and
    ties are exact.
    """
    selected = np.arange(len(targets))[rows] if rows is not None else np.arange(len(targets))
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim != 2 or log_probs.shape[0] != selected.shape[0]:
        raise ConfigError(
            f"expected one log-probability row per target ({selected.shape[0]}), "
            f"got an array of shape {log_probs.shape}"
        )
    true_ids = targets.token[selected]
    n_greater, n_tied, true_values = rank_counts(log_probs, true_ids)
    return TokenScores(
        sequence=targets.sequence[selected],
        position=targets.position[selected],
        token=true_ids,
        previous=targets.previous[selected],
        log_prob=true_values,
        n_greater=n_greater,
        n_tied=n_tied,
        max_prob=np.exp(log_probs.max(axis=1)),
    )


def rank_counts(
    values: np.ndarray, true_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row: ids strictly above the true id's value, other ids equal to it, and
    the true id's value. Works on probabilities, log-probabilities or logits alike."""
    true_values = values[np.arange(values.shape[0]), true_ids]
    column = true_values[:, None]
    n_greater = np.count_nonzero(values > column, axis=1).astype(np.int64)
    n_tied = np.count_nonzero(values == column, axis=1).astype(np.int64) - 1
    return n_greater, n_tied, true_values


def scores_from_fixed_distribution(targets: PredictionTargets, probs: np.ndarray) -> TokenScores:
    """Score every target with one distribution over the vocabulary (uniform, unigram).

    Ranks come from one sort of the distribution instead of a comparison per target.
    """
    probs = np.asarray(probs, dtype=np.float64)
    ordered = np.sort(probs)
    above = ordered.shape[0] - np.searchsorted(ordered, probs, side="right")
    equal = np.searchsorted(ordered, probs, side="right") - np.searchsorted(
        ordered, probs, side="left"
    )
    ids = targets.token
    with np.errstate(divide="ignore"):
        log_prob = np.log(probs[ids])
    return TokenScores.of_targets(
        targets,
        log_prob=log_prob,
        n_greater=above[ids].astype(np.int64),
        n_tied=(equal[ids] - 1).astype(np.int64),
        max_prob=np.full(ids.shape[0], float(probs.max()) if probs.size else np.nan),
    )
