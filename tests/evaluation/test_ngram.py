"""The fast Kneser-Ney model against a slow dictionary implementation, on synthetic and
real (finch) data; normalisation, ranks, unseen ids, discounts and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.finch_strings import BIRDS, bird_corpus
from helpers.kn_reference import ReferenceKneserNey, discounts_from
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlm.evaluation.ngram as ngram
from seqlm.errors import ConfigError, CorpusError, SeqlmError
from seqlm.evaluation.ngram import KneserNeyModel, count_ngrams, modified_kn_discounts
from seqlm.evaluation.scores import prediction_targets, rank_counts

RELATIVE = 1e-9


def random_corpus(rng: np.random.Generator, n: int, vocab_size: int, max_len: int = 15):
    """Sequences [BOS] x.. [EOS] with a skewed (Zipf-like) choice of ids 2..V-1."""
    weights = 1.0 / np.arange(1, vocab_size - 1)
    weights /= weights.sum()
    return [
        np.array(
            [1, *rng.choice(np.arange(2, vocab_size), size=rng.integers(0, max_len), p=weights), 2]
        )
        for _ in range(n)
    ]


def as_lists(sequences):
    return [[int(t) for t in s] for s in sequences]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_probs_match_the_reference_on_synthetic_data(order: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab_size = 14
    train, held_out = random_corpus(rng, 80, vocab_size), random_corpus(rng, 30, vocab_size)
    fast = KneserNeyModel.fit(train, vocab_size, order).log_prob(held_out)
    slow = np.array(
        ReferenceKneserNey(as_lists(train), vocab_size, order).log_probs(as_lists(held_out))
    )
    np.testing.assert_allclose(fast, slow, rtol=RELATIVE, atol=0)


@pytest.mark.parametrize("order", [2, 3])
def test_finch_held_out_perplexity_matches_a_count_based_computation(finch_lesions, order) -> None:
    """Acceptance: per bird, bigram and trigram perplexity on held-out pre-lesion song
    and on post-lesion song agree with the dictionary implementation to 1e-9."""
    for bird in BIRDS:
        train, held_out, post, vocab_size = bird_corpus(finch_lesions, bird)
        model = KneserNeyModel.fit(train, vocab_size, order)
        reference = ReferenceKneserNey(as_lists(train), vocab_size, order)
        for evaluation in (held_out, post):
            fast = model.log_prob(evaluation)
            slow = np.array(reference.log_probs(as_lists(evaluation)))
            np.testing.assert_allclose(fast, slow, rtol=RELATIVE, atol=0)
            assert model.perplexity(evaluation) == pytest.approx(
                math.exp(-slow.mean()), rel=RELATIVE
            )


def test_finch_four_gram_perplexity_is_in_the_published_range(finch_lesions) -> None:
    """The data README: a 4-gram on 80% of each bird's pre-lesion bouts gives held-out
    pre-lesion perplexity 1.21-1.61 and post-lesion 1.59-3.36 (other splits and
    smoothing there, so the bounds here are a little wider)."""
    pre, post = [], []
    for bird in BIRDS:
        train, held_out, post_lesion, vocab_size = bird_corpus(finch_lesions, bird)
        model = KneserNeyModel.fit(train, vocab_size, 4)
        pre.append(model.perplexity(held_out))
        post.append(model.perplexity(post_lesion))
    assert all(1.15 < p < 1.7 for p in pre), pre
    assert all(1.5 < p < 3.6 for p in post), post
    # The lesion makes song less predictable for the pre-lesion model.
    assert np.mean(post) > np.mean(pre) + 0.3


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    vocab_size=st.integers(6, 30),
    n_train=st.integers(1, 40),
    order=st.integers(1, 6),
    context=st.lists(st.integers(0, 1000), max_size=8),
)
def test_distributions_sum_to_one_and_match_the_reference(
    seed, vocab_size, n_train, order, context
):
    rng = np.random.default_rng(seed)
    train = random_corpus(rng, n_train, vocab_size)
    model = KneserNeyModel.fit(train, vocab_size, order)
    history = [2 + c % (vocab_size - 2) for c in context]  # any id but [PAD] and [BOS]
    row = model.next_token_distribution([1, *history])
    assert row.shape == (vocab_size,)
    assert row.sum() == pytest.approx(1.0, abs=1e-12)
    assert row[0] == 0.0 and row[1] == 0.0  # [PAD] and [BOS] are never predicted
    assert np.all(row[2:] > 0)
    reference = ReferenceKneserNey(as_lists(train), vocab_size, order)
    expected = [reference.prob([1, *history], w) for w in range(vocab_size)]
    np.testing.assert_allclose(row, expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("budget", [ngram.SPARSE_BUDGET_ENTRIES, 40])
def test_fast_ranks_equal_comparisons_against_dense_rows(monkeypatch, budget) -> None:
    monkeypatch.setattr(ngram, "SPARSE_BUDGET_ENTRIES", budget)
    rng = np.random.default_rng(7)
    vocab_size = 25
    train, held_out = random_corpus(rng, 60, vocab_size, 25), random_corpus(rng, 12, vocab_size, 25)
    targets = prediction_targets(held_out, vocab_size)
    for order in range(1, 7):
        model = KneserNeyModel.fit(train, vocab_size, order)
        scores = model.score(held_out)
        rows = np.stack(
            [
                model.next_token_distribution(held_out[i][:p])
                for i, p in zip(targets.sequence, targets.position, strict=True)
            ]
        )
        greater, tied, true_values = rank_counts(rows, targets.token)
        np.testing.assert_array_equal(scores.n_greater, greater)
        np.testing.assert_array_equal(scores.n_tied, tied)
        np.testing.assert_array_equal(scores.max_prob, rows.max(axis=1))
        np.testing.assert_allclose(scores.log_prob, np.log(true_values), rtol=1e-12)
        np.testing.assert_array_equal(scores.position, targets.position)


def test_ids_unseen_in_training_get_finite_probability() -> None:
    train = [np.array([1, 5, 6, 5, 6, 2])] * 3
    held_out = [np.array([1, 5, 9, 7, 2])]  # 7 and 9 never seen in training
    for order in (1, 2, 3):
        model = KneserNeyModel.fit(train, 10, order)
        log_prob = model.log_prob(held_out)
        assert np.all(np.isfinite(log_prob))
        # Unseen ids share the interpolated uniform mass equally.
        row = model.next_token_distribution([1, 5])
        assert row[7] == row[9] == row[3] > 0
        assert row[6] > row[7]


def test_counts_are_shared_between_orders() -> None:
    rng = np.random.default_rng(3)
    train = random_corpus(rng, 50, 12)
    counts = count_ngrams(train, 12, max_order=4)
    for order in (1, 2, 3, 4):
        shared = KneserNeyModel(counts, order).log_prob(train)
        alone = KneserNeyModel.fit(train, 12, order).log_prob(train)
        np.testing.assert_array_equal(shared, alone)
    assert counts.n_targets == sum(len(s) - 1 for s in train)
    assert int(counts.raw_counts[0].sum()) == counts.n_targets


def test_higher_order_fits_a_deterministic_pattern_better() -> None:
    # a b c a b c ...: after (a b) comes c always; a bigram sees b -> c too, but a
    # unigram cannot; perplexity must fall with order.
    cycle = [5, 6, 7] * 20
    train = [np.array([1, *cycle, 2])] * 5
    perplexity = [KneserNeyModel.fit(train, 8, n).perplexity(train) for n in (1, 2, 3)]
    assert perplexity[0] > 2.5 > 1.2 > perplexity[1] >= perplexity[2] * 0.999


def test_modified_discounts_follow_chen_and_goodman() -> None:
    counts = np.array([1] * 10 + [2] * 4 + [3] * 3 + [4] * 2 + [9])
    y = 10 / (10 + 2 * 4)
    expected = [1 - 2 * y * 4 / 10, 2 - 3 * y * 3 / 4, 3 - 4 * y * 2 / 3]
    np.testing.assert_allclose(modified_kn_discounts(counts), expected, rtol=1e-15)
    from collections import Counter

    reference = discounts_from(Counter(dict(enumerate(counts.tolist()))))
    np.testing.assert_allclose(modified_kn_discounts(counts), reference, rtol=1e-15)


@pytest.mark.parametrize(
    "counts",
    [[3, 3, 3], [1, 1, 1], [2, 2, 5], [1, 2, 2, 2, 2, 2, 2, 2, 3]],
)
def test_discounts_fall_back_on_tiny_data_and_stay_valid(counts) -> None:
    d = modified_kn_discounts(np.array(counts))
    assert np.all(d > 0) and np.all(d <= np.array([1, 2, 3]))


def test_bad_parameters_and_sequences_raise_seqlm_errors() -> None:
    good = [np.array([1, 5, 6, 2])]
    with pytest.raises(ConfigError):
        count_ngrams(good, 10, max_order=0)
    with pytest.raises(ConfigError):
        KneserNeyModel(count_ngrams(good, 10, 2), 3)
    with pytest.raises(CorpusError, match="sequence 1 does not start with"):
        KneserNeyModel.fit([good[0], np.array([5, 6, 2])], 10, 2)
    with pytest.raises(CorpusError, match="token id 12"):
        KneserNeyModel.fit([np.array([1, 12, 2])], 10, 2)
    with pytest.raises(CorpusError, match="no tokens"):
        KneserNeyModel.fit([np.array([1])], 10, 2)
    with pytest.raises(CorpusError, match="no tokens"):
        KneserNeyModel.fit(good, 10, 2).perplexity([np.array([1])])
    with pytest.raises(CorpusError, match="special id 1"):
        KneserNeyModel.fit(good, 10, 2).log_prob([np.array([1, 5, 1, 2])])


@settings(max_examples=60, deadline=None)
@given(
    sequences=st.lists(st.lists(st.integers(-3, 14), max_size=8), max_size=5),
    vocab_size=st.integers(0, 12),
    order=st.integers(-1, 4),
)
def test_any_input_gives_a_model_or_a_seqlm_error(sequences, vocab_size, order) -> None:
    arrays = [np.array(s, dtype=np.int64) for s in sequences]
    try:
        model = KneserNeyModel.fit(arrays, vocab_size, order)
        scores = model.score(arrays)
    except SeqlmError:
        return
    assert np.all(np.isfinite(scores.log_prob))
    assert np.all(scores.log_prob <= 0)
