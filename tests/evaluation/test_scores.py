"""Prediction targets, rank counts with ties, top-k with random tie-breaking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.scores import (
    TokenScores,
    prediction_targets,
    scores_from_fixed_distribution,
    token_scores_from_log_probs,
)


def test_targets_skip_bos_and_pad_contexts_with_bos() -> None:
    targets = prediction_targets([np.array([1, 7, 8, 2]), np.array([1, 2])], vocab_size=10)
    np.testing.assert_array_equal(targets.sequence, [0, 0, 0, 1])
    np.testing.assert_array_equal(targets.position, [1, 2, 3, 1])
    np.testing.assert_array_equal(targets.token, [7, 8, 2, 2])
    np.testing.assert_array_equal(targets.previous, [1, 7, 8, 1])
    np.testing.assert_array_equal(targets.context_token(1), [1, 7, 8, 1])
    np.testing.assert_array_equal(targets.context_token(2), [1, 1, 7, 1])
    np.testing.assert_array_equal(targets.context_token(5), [1, 1, 1, 1])


def test_targets_accept_memmap_like_unsigned_arrays() -> None:
    targets = prediction_targets([np.array([1, 300, 2], dtype=np.uint16)], vocab_size=301)
    assert targets.token.dtype == np.int64
    np.testing.assert_array_equal(targets.token, [300, 2])


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        ([np.array([5, 2])], "does not start with"),
        ([np.array([], dtype=np.int64)], "does not start with"),
        ([np.array([1, 2]), np.array([1, 10, 2])], "sequence 1 holds token id 10 at position 1"),
        ([np.array([1, -1])], "token id -1"),
        ([np.array([1, 5, 0, 2])], "special id 0"),
    ],
)
def test_bad_sequences_name_the_sequence(sequences, message) -> None:
    with pytest.raises(CorpusError, match=message):
        prediction_targets(sequences, vocab_size=10)


def test_vocabulary_must_hold_more_than_the_special_ids() -> None:
    with pytest.raises(ConfigError):
        prediction_targets([np.array([1])], vocab_size=2)


def test_ranks_and_ties_from_log_probability_rows() -> None:
    targets = prediction_targets([np.array([1, 2, 3, 4])], vocab_size=5)  # targets 2, 3, 4
    probs = np.array(
        [
            [0.0, 0.0, 0.4, 0.3, 0.3],  # 2 is the clear favourite
            [0.0, 0.0, 0.4, 0.3, 0.3],  # 3 ties with 4, below 2
            [0.0, 0.0, 0.25, 0.25, 0.5],  # 4 is top
        ]
    )
    with np.errstate(divide="ignore"):
        scores = token_scores_from_log_probs(targets, np.log(probs))
    np.testing.assert_array_equal(scores.n_greater, [0, 1, 0])
    np.testing.assert_array_equal(scores.n_tied, [0, 1, 0])
    np.testing.assert_allclose(scores.max_prob, [0.4, 0.4, 0.5])
    np.testing.assert_allclose(scores.log_prob, np.log([0.4, 0.3, 0.5]))
    np.testing.assert_allclose(scores.top_k_hit(1), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(scores.top_k_hit(2), [1.0, 0.5, 1.0])
    np.testing.assert_allclose(scores.top_k_hit(3), [1.0, 1.0, 1.0])


def test_batched_rows_and_concat_give_the_whole() -> None:
    rng = np.random.default_rng(0)
    sequences = [np.array([1, *rng.integers(2, 9, size=n), 2]) for n in (3, 0, 5)]
    targets = prediction_targets(sequences, vocab_size=9)
    logits = rng.normal(size=(len(targets), 9))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    whole = token_scores_from_log_probs(targets, log_probs)
    parts = [
        token_scores_from_log_probs(targets, log_probs[a:b], rows=slice(a, b))
        for a, b in ((0, 4), (4, len(targets)))
    ]
    joined = TokenScores.concat(parts)
    for name in ("sequence", "position", "token", "log_prob", "n_greater", "n_tied", "max_prob"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
    assert len(TokenScores.concat([])) == 0
    with pytest.raises(ConfigError):
        token_scores_from_log_probs(targets, log_probs[:3])


def test_fixed_distribution_scores_equal_row_by_row_scores() -> None:
    rng = np.random.default_rng(1)
    probs = np.array([0, 0, 0.1, 0.2, 0.2, 0.2, 0.3])
    sequences = [np.array([1, *rng.integers(2, 7, size=6), 2]) for _ in range(4)]
    targets = prediction_targets(sequences, vocab_size=7)
    fixed = scores_from_fixed_distribution(targets, probs)
    with np.errstate(divide="ignore"):
        rows = np.log(np.tile(probs, (len(targets), 1)))
    by_row = token_scores_from_log_probs(targets, rows)
    for name in ("n_greater", "n_tied", "log_prob", "max_prob"):
        np.testing.assert_allclose(getattr(fixed, name), getattr(by_row, name))


def test_arrays_of_different_lengths_are_refused() -> None:
    one, two = np.zeros(1, np.int64), np.zeros(2, np.int64)
    with pytest.raises(ConfigError):
        TokenScores(one, one, one, one, np.zeros(2), one, one, np.zeros(1))
    scores = TokenScores(two, two, two, two, np.zeros(2), two, two, np.zeros(2))
    with pytest.raises(ConfigError):
        scores.top_k_hit(0)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    true_index=st.integers(0, 5),
    k=st.integers(1, 7),
)
def test_top_k_hit_is_the_average_over_every_tie_break(values, true_index, k) -> None:
    """Brute force: over every ordering of the ids that sorts by value (ties in every
    possible order), the share that puts the true id in the first k."""
    true_index %= len(values)
    greater = sum(v > values[true_index] for v in values)
    tied = sum(v == values[true_index] for v in values) - 1
    scores = TokenScores(
        *(np.array([0]) for _ in range(4)),
        np.array([0.0]),
        np.array([greater]),
        np.array([tied]),
        np.array([1.0]),
    )
    orders = [
        order
        for order in itertools.permutations(range(len(values)))
        if all(values[a] >= values[b] for a, b in itertools.pairwise(order))
    ]
    expected = np.mean([true_index in order[:k] for order in orders])
    assert scores.top_k_hit(k)[0] == pytest.approx(expected)
