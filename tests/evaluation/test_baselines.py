"""Uniform and unigram baselines, order selection, and baselines on a real corpus."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.baselines import (
    BaselineOptions,
    UniformBaseline,
    UnigramBaseline,
    evaluate_baselines,
    fit_baselines,
    select_ngram_order,
    split_sequences,
)
from seqlm.evaluation.metrics import breakdowns, token_kinds, token_table
from seqlm.evaluation.ngram import KneserNeyModel, count_ngrams
from seqlm.vocabularies.scheme import BOS_ID


def perplexity(scores) -> float:
    return float(np.exp(-scores.log_prob.mean()))


def test_uniform_perplexity_is_the_number_of_predictable_ids() -> None:
    sequences = [np.array([1, 5, 6, 7, 2]), np.array([1, 9, 2])]
    scores = UniformBaseline(10).score(sequences)
    assert perplexity(scores) == pytest.approx(8)  # 10 ids less [PAD] and [BOS]
    np.testing.assert_allclose(scores.top_k_hit(1), 1 / 8)
    np.testing.assert_allclose(scores.top_k_hit(5), 5 / 8)
    np.testing.assert_allclose(scores.top_k_hit(10), 1.0)
    np.testing.assert_allclose(scores.max_prob, 1 / 8)


def test_unigram_is_add_one_smoothed_over_predictable_ids() -> None:
    train = [np.array([1, 5, 5, 6, 2]), np.array([1, 5, 2])]  # targets 5 5 6 2 5 2
    model = UnigramBaseline.fit(train, vocab_size=8)
    # counts + 1 over the 6 predictable ids (2..7), 6 targets: denominator 12.
    expected = np.array([0, 0, 3, 1, 1, 4, 2, 1]) / 12
    np.testing.assert_allclose(model.probabilities, expected)
    scores = model.score([np.array([1, 7, 5, 2])])
    np.testing.assert_allclose(scores.log_prob, np.log([1 / 12, 4 / 12, 3 / 12]))
    np.testing.assert_array_equal(scores.n_greater, [3, 0, 1])  # 7 ties with 3 and 4
    np.testing.assert_array_equal(scores.n_tied, [2, 0, 0])


def markov_sequences(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Next id = a fixed function of the previous two plus a little noise: an order-3
    model is right; orders 1 and 2 are not."""
    out = []
    for _ in range(n):
        tokens = [int(rng.integers(5, 9)), int(rng.integers(5, 9))]
        for _ in range(int(rng.integers(10, 30))):
            follow = 5 + (tokens[-1] * 3 + tokens[-2]) % 4
            tokens.append(follow if rng.random() < 0.95 else int(rng.integers(5, 9)))
        out.append(np.array([1, *tokens, 2]))
    return out


def test_best_order_is_chosen_on_the_tuning_split() -> None:
    rng = np.random.default_rng(0)
    train, tuning = markov_sequences(rng, 300), markov_sequences(rng, 60)
    counts = count_ngrams(train, 10, max_order=6)
    selection = select_ngram_order(counts, tuning)
    assert sorted(selection.tuning_perplexity) == [1, 2, 3, 4, 5, 6]
    assert selection.best_order >= 3
    assert selection.tuning_perplexity[3] < selection.tuning_perplexity[2] * 0.8
    assert selection.tuning_perplexity[selection.best_order] == min(
        selection.tuning_perplexity.values()
    )
    with pytest.raises(ConfigError):
        select_ngram_order(counts, [np.array([1])])


def test_order_choice_never_counts_conditioning_targets() -> None:
    """Issue 13 item 3: the tuning perplexity that picks the n-gram's order (and is
    reported) is over the same targets as every metric: conditioning tokens left out."""
    rng = np.random.default_rng(0)

    def conditioned(n: int) -> list[np.ndarray]:  # [BOS] [COND a|b] ... as `corpus condition`
        return [np.insert(s, 1, 10 + i % 2) for i, s in enumerate(markov_sequences(rng, n))]

    train, tuning = conditioned(200), conditioned(40)
    counts = count_ngrams(train, 12, max_order=4)
    every = select_ngram_order(counts, tuning)
    selection = select_ngram_order(counts, tuning, context_only_ids=[10, 11])
    for order, value in selection.tuning_perplexity.items():
        scores = KneserNeyModel(counts, order).score(tuning).without_tokens([10, 11])
        assert value == pytest.approx(perplexity(scores), rel=1e-12)
        assert value != pytest.approx(every.tuning_perplexity[order], rel=1e-3)
    fitted = fit_baselines(train, 12, tuning, BaselineOptions(max_order=4), None, [10, 11])
    unconditioned_counts = count_ngrams(train, 12, max_order=4, context_only_ids=[10, 11])
    assert fitted.selection == select_ngram_order(
        unconditioned_counts, tuning, context_only_ids=[10, 11]
    )
    with pytest.raises(ConfigError, match="only conditioning"):
        select_ngram_order(counts, [np.array([1, 10])], context_only_ids=[10])


def test_baselines_give_conditioning_tokens_no_probability() -> None:
    """Conditioning tokens are never a target of the GPT (the loader ignores them), so the
    baselines compared with it must not spend probability on them either: counted as
    targets they took mass from every real token (a handicap for the baseline)."""
    rng = np.random.default_rng(0)

    def conditioned(n: int) -> list[np.ndarray]:
        return [np.insert(s, 1, 10 + i % 2) for i, s in enumerate(markov_sequences(rng, n))]

    train, tuning = conditioned(200), conditioned(40)
    options = BaselineOptions(ngram_orders=(1, 3), max_order=4)
    plain = fit_baselines(train, 12, tuning, options, None, ())
    excluded = fit_baselines(train, 12, tuning, options, None, [10, 11])
    for scorer in excluded.scorers:
        scores = scorer.score(tuning)
        assert np.all(np.isneginf(scores.log_prob[np.isin(scores.token, [10, 11])])), scorer.name
    ngram = excluded.scorers[-1]
    for history in ([], [10], [10, 3, 4], [5, 6, 7]):
        row = ngram.next_token_distribution([BOS_ID, *history])
        assert row[[10, 11]].sum() == 0.0
        assert row.sum() == pytest.approx(1.0, abs=1e-12)
    assert excluded.scorers[0].distribution()[[10, 11]].sum() == 0.0  # uniform
    for before, after in zip(plain.scorers, excluded.scorers, strict=True):
        kept_before = perplexity(before.score(tuning).without_tokens([10, 11]))
        kept_after = perplexity(after.score(tuning).without_tokens([10, 11]))
        assert kept_after < kept_before, before.name  # the mass went to real tokens


def test_fit_baselines_names_and_options() -> None:
    rng = np.random.default_rng(1)
    train, tuning = markov_sequences(rng, 50), markov_sequences(rng, 10)
    fitted = fit_baselines(train, 10, tuning, BaselineOptions(ngram_orders=(2,), max_order=4))
    names = [s.name for s in fitted.scorers]
    assert names[:3] == ["uniform", "unigram", "2-gram KN"]
    assert names[3] == f"best n-gram ({fitted.selection.best_order}-gram KN)"
    without_tuning = fit_baselines(train, 10, None, BaselineOptions(ngram_orders=(2, 3)))
    assert [s.name for s in without_tuning.scorers] == [
        "uniform",
        "unigram",
        "2-gram KN",
        "3-gram KN",
    ]
    assert without_tuning.selection is None
    with pytest.raises(ConfigError):
        BaselineOptions(ngram_orders=(9,), max_order=8)
    with pytest.raises(ConfigError):
        BaselineOptions(max_order=0)


class ListCorpus:
    """The three methods baselines need from a corpus, over in-memory sequences."""

    def __init__(self, sequences: list[np.ndarray], splits: list[str], vocab_size: int):
        self._sequences = sequences
        self.vocab_size = vocab_size
        self.index = pl.DataFrame(
            {"seq_id": np.arange(len(sequences)), "split": splits, "group": ["g"] * len(splits)}
        )

    def split(self, name: str) -> pl.DataFrame:
        return self.index.filter(pl.col("split") == name)

    def sequence(self, seq_id: int) -> np.ndarray:
        return self._sequences[seq_id]


def test_evaluate_baselines_scores_the_same_tokens_for_every_baseline() -> None:
    rng = np.random.default_rng(2)
    sequences = markov_sequences(rng, 80)
    splits = ["train"] * 60 + ["tuning"] * 10 + ["held_out"] * 10
    corpus = ListCorpus(sequences, splits, 10)
    result = evaluate_baselines(corpus, options=BaselineOptions(ngram_orders=(2,), max_order=5))
    assert result.index["seq_id"].to_list() == list(range(70, 80))
    held_out_tokens = sum(len(s) - 1 for s in sequences[70:])
    for scores in result.scores.values():
        assert len(scores) == held_out_tokens
        np.testing.assert_array_equal(scores.token, result.scores["uniform"].token)
    ppl = {name: perplexity(s) for name, s in result.scores.items()}
    best = next(name for name in ppl if name.startswith("best"))
    assert ppl["uniform"] > ppl["unigram"] > ppl["2-gram KN"] > ppl[best]
    with pytest.raises(CorpusError):
        evaluate_baselines(ListCorpus(sequences[:2], ["held_out"] * 2, 10))


def test_split_sequences_keeps_the_order_of_the_named_splits() -> None:
    sequences = [np.array([1, i + 5, 2]) for i in range(4)]
    corpus = ListCorpus(sequences, ["held_out", "train", "tuning", "held_out"], 10)
    index, arrays = split_sequences(corpus, ["tuning", "held_out"])
    assert index["seq_id"].to_list() == [2, 0, 3]
    assert [int(a[1]) for a in arrays] == [7, 5, 8]


@pytest.fixture(scope="module")
def finch_corpus(tmp_path_factory):
    from helpers.shared_data import shared_path

    from seqlm.ingest import ingest

    source = shared_path("birdsong", "koparkar2024_mman_lesions")
    out = tmp_path_factory.mktemp("finch") / "corpus"
    return ingest("birdsong-strings", [source], out)


def test_baselines_on_the_finch_corpus(finch_corpus) -> None:
    """End to end on the real lesion corpus: the vocabulary's own ids, index rows with
    bird and condition, and the ordering a user should see."""
    result = evaluate_baselines(finch_corpus, options=BaselineOptions(ngram_orders=(2, 4)))
    uniform = result.scores["uniform"]
    assert perplexity(uniform) == pytest.approx(finch_corpus.vocab_size - 2)
    assert len(uniform) == int((result.index["length"] - 1).sum())
    ppl = {name: perplexity(s) for name, s in result.scores.items()}
    best = next(name for name in ppl if name.startswith("best"))
    assert ppl["unigram"] > 2 * ppl["2-gram KN"]
    assert ppl["2-gram KN"] > ppl["4-gram KN"]
    assert ppl[best] <= ppl["2-gram KN"]
    assert 1.1 < ppl["4-gram KN"] < 3.0
    assert result.selection is not None and result.selection.best_order >= 3

    kinds = token_kinds(finch_corpus.vocabulary.tokens)
    table = pl.concat(
        [token_table(s, result.index, kinds, model=name) for name, s in result.scores.items()]
    )
    report = breakdowns(table)
    assert {"overall", "split", "group", "condition", "kind", "position", "repeat"} <= set(report)
    assert set(report["kind"]["kind"]) <= {"syllable", "special"}
    four = report["condition"].filter(pl.col("model") == "4-gram KN")
    assert set(four["condition"]) == {"pre", "post"}
    assert four["tokens"].sum() == len(uniform)


@pytest.mark.slow
def test_mimic_demo_baselines_against_the_reference_figures(tmp_path) -> None:
    """The data README's MIMIC demo figures (vocabulary 10,991 there; 10,172 here, where
    the MEDS adapter's defaults with `min_entities=1` make the tokens): unigram
    perplexity 1,524 and top-1 2.3%; an interpolated bigram 643 (Kneser-Ney must do
    at least as well)."""
    from helpers.shared_data import shared_path

    from seqlm.ingest import ingest

    source = shared_path("clinical", "mimic-iv-demo-meds")
    corpus = ingest("meds", [source], tmp_path / "mimic", {"scheme": {"min_entities": 1}})
    result = evaluate_baselines(corpus, options=BaselineOptions(ngram_orders=(2,)))
    unigram, bigram = result.scores["unigram"], result.scores["2-gram KN"]
    assert perplexity(unigram) == pytest.approx(1524, rel=0.05)
    assert unigram.top_k_hit(1).mean() == pytest.approx(0.023, abs=0.003)
    assert perplexity(bigram) < 643
    assert bigram.top_k_hit(1).mean() > 0.067
    assert bigram.top_k_hit(10).mean() > 0.254
