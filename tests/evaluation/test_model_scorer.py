"""The GPT scorer: direct log-softmax agreement, sliding windows, run folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.eval_fixtures import (  # noqa: F401 (autouse fixture)
    small_finch_corpus,
    tiny_gpt,
    write_run,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.baselines import UniformBaseline
from seqlm.evaluation.lstm import LSTMConfig, LSTMLanguageModel
from seqlm.evaluation.model_scorer import (
    ModelScorer,
    check_run_matches_corpus,
    load_run_model,
    plan_windows,
)
from seqlm.evaluation.scores import rank_counts


def random_sequences(lengths, vocab_size=30, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.array([1, *rng.integers(3, vocab_size, n - 2), 2]) for n in lengths]


def direct_rows(model, sequence: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Log-softmax rows for inputs [start, stop) of one sequence, in one forward."""
    with torch.no_grad():
        logits = model(torch.as_tensor(sequence[start:stop])[None]).logits[0]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def test_scores_agree_with_a_direct_log_softmax_on_short_sequences() -> None:
    model = tiny_gpt(seed=1)
    sequences = random_sequences([2, 5, 9, 16, 17])  # all fit in the block of 16 inputs
    scores = ModelScorer(model, device="cpu").score(sequences)
    rows, true_ids = [], []
    for seq in sequences:
        rows.append(direct_rows(model, seq, 0, len(seq) - 1))
        true_ids.append(seq[1:])
    rows, true_ids = np.concatenate(rows), np.concatenate(true_ids)
    n_greater, n_tied, log_prob = rank_counts(rows, true_ids)
    np.testing.assert_allclose(scores.log_prob, log_prob, atol=2e-5)
    np.testing.assert_array_equal(scores.n_greater, n_greater)
    np.testing.assert_array_equal(scores.n_tied, n_tied)
    np.testing.assert_allclose(scores.max_prob, np.exp(rows.max(axis=1)), rtol=2e-5)
    # the same predicted tokens as every baseline
    uniform = UniformBaseline(30).score(sequences)
    for field in ("sequence", "position", "token", "previous"):
        np.testing.assert_array_equal(getattr(scores, field), getattr(uniform, field))


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 120), min_size=1, max_size=6),
    context=st.integers(1, 24),
    stride_share=st.floats(0.01, 1.0),
)
def test_windows_predict_every_target_exactly_once(lengths, context, stride_share) -> None:
    stride = max(1, min(context, round(stride_share * context)))
    plan = plan_windows(lengths, context, stride)
    for number, length in enumerate(lengths):
        mine = plan.sequence == number
        starts, stops, news = plan.start[mine], plan.stop[mine], plan.new_from[mine]
        predicted = np.concatenate([np.arange(n, e) for n, e in zip(news, stops, strict=True)])
        np.testing.assert_array_equal(predicted, np.arange(length - 1))  # each input once
        assert (stops - starts <= context).all() and (starts >= 0).all()
        assert (news >= starts).all()
        # past the first window every target has at least context - stride + 1 tokens
        later = news[1:] - starts[1:] + 1
        assert (later >= context - stride + 1).all()


def test_long_sequences_use_the_window_that_first_reaches_each_target() -> None:
    model = tiny_gpt(seed=2, positions="rotary")
    sequences = random_sequences([50, 7, 33], seed=3)
    scorer = ModelScorer(model, context=16, stride=6, device="cpu")
    scores = scorer.score(sequences)
    plan = plan_windows([len(s) for s in sequences], 16, 6)
    expected = np.full(len(scores), np.nan)
    offsets = np.concatenate([[0], np.cumsum([len(s) - 1 for s in sequences])[:-1]])
    for w in range(len(plan.sequence)):
        seq = sequences[plan.sequence[w]]
        rows = direct_rows(model, seq, plan.start[w], plan.stop[w])
        new = np.arange(plan.new_from[w], plan.stop[w])
        at = offsets[plan.sequence[w]] + new
        expected[at] = rows[new - plan.start[w], seq[new + 1]]
    np.testing.assert_allclose(scores.log_prob, expected, atol=2e-5)
    info = scorer.describe()
    assert info["context"] == 16 and info["stride"] == 6
    assert info["min_context_after_first_window"] == 11


def test_batch_budget_and_default_stride_do_not_change_scores() -> None:
    model = tiny_gpt(seed=4)
    sequences = random_sequences([40, 3, 25, 18, 60], seed=5)
    wide = ModelScorer(model, batch_tokens=10_000, device="cpu").score(sequences)
    narrow = ModelScorer(model, batch_tokens=16, device="cpu").score(sequences)
    np.testing.assert_allclose(wide.log_prob, narrow.log_prob, atol=2e-5)
    np.testing.assert_array_equal(wide.n_greater, narrow.n_greater)
    assert ModelScorer(model).stride == 8
    with pytest.raises(ConfigError):
        ModelScorer(model, context=17)
    with pytest.raises(ConfigError):
        ModelScorer(model, stride=0)


def test_run_folders_load_back_the_model_that_was_saved(tmp_path) -> None:
    corpus = small_finch_corpus(tmp_path / "corpus")
    model = tiny_gpt(seed=5, vocab_size=corpus.vocab_size, block_size=32)
    run = write_run(tmp_path / "run", model, corpus)
    sequences = [np.asarray(corpus.sequence(i)) for i in range(6)]
    expected = ModelScorer(model, device="cpu").score(sequences)
    for checkpoint in ("best", "latest", "step_0000007"):
        loaded = load_run_model(run, checkpoint)
        assert loaded.model_type == "gpt" and loaded.step == 7
        got = ModelScorer(loaded.model, device="cpu").score(sequences)
        np.testing.assert_array_equal(got.log_prob, expected.log_prob)
    check_run_matches_corpus(loaded.config, corpus)
    lstm = LSTMLanguageModel(LSTMConfig(vocab_size=corpus.vocab_size, n_embd=16, block_size=32))
    lstm_run = write_run(tmp_path / "lstm", lstm, corpus, model_type="lstm", best=False)
    loaded = load_run_model(lstm_run)  # no best/: the latest
    assert loaded.model_type == "lstm" and loaded.weights.parent == lstm_run
    lstm_scores = ModelScorer(loaded.model, device="cpu").score(sequences)
    np.testing.assert_array_equal(lstm_scores.position, expected.position)


def test_broken_or_mismatched_runs_are_corpus_errors(tmp_path) -> None:
    corpus = small_finch_corpus(tmp_path / "corpus")
    with pytest.raises(CorpusError, match="config.json"):
        load_run_model(tmp_path / "nowhere")
    model = tiny_gpt(vocab_size=corpus.vocab_size)
    run = write_run(tmp_path / "run", model, corpus)
    config = load_run_model(run).config
    with pytest.raises(CorpusError, match="step_0000099"):
        load_run_model(run, "step_0000099")
    wrong = dict(config, model={**config["model"], "vocab_size": corpus.vocab_size + 1})
    with pytest.raises(CorpusError, match="vocabulary"):
        check_run_matches_corpus(wrong, corpus)
    other = dict(config, corpus={**config["corpus"], "vocabulary_hash": "0" * 64})
    with pytest.raises(CorpusError, match="not the vocabulary"):
        check_run_matches_corpus(other, corpus)
    (run / "config.json").write_text(
        (run / "config.json").read_text().replace('"n_embd": 32', '"n_embd": 64')
    )
    with pytest.raises(CorpusError, match="do not fit"):
        load_run_model(run)


def test_a_temperature_divides_the_logits_and_target_logits_are_at_one() -> None:
    model = tiny_gpt(seed=1)
    sequences = random_sequences([5, 9, 17])
    sequences[1][1] = 29  # a conditioning token, say
    plain = ModelScorer(model, device="cpu")
    scaled = ModelScorer(model, device="cpu", temperature=2.0)
    rows = np.concatenate([direct_rows(model, s, 0, len(s) - 1) for s in sequences])
    true_ids = np.concatenate([s[1:] for s in sequences])
    halved = torch.log_softmax(torch.as_tensor(rows) / 2.0, dim=-1).numpy()
    expected = halved[np.arange(len(true_ids)), true_ids]
    np.testing.assert_allclose(scaled.score(sequences).log_prob, expected, atol=2e-5)
    assert scaled.describe()["temperature"] == 2.0 and "temperature" not in plain.describe()
    logits, ids = scaled.target_logits(sequences, context_only_ids=[29])
    keep = true_ids != 29
    np.testing.assert_array_equal(ids, true_ids[keep])
    direct = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1).numpy()
    np.testing.assert_allclose(direct, rows[keep], atol=2e-5)  # at T = 1, not 2
    assert scaled.temperature == 2.0
    few, few_ids = scaled.target_logits(sequences, context_only_ids=[29], max_rows=4)
    spaced = np.linspace(0, len(ids) - 1, 4).astype(int)  # evenly spaced, the ends kept
    np.testing.assert_array_equal(few_ids, ids[spaced])
    np.testing.assert_array_equal(few, logits[spaced])
    with pytest.raises(ConfigError, match="temperature"):
        ModelScorer(model, temperature=0.0)
