"""Span and truncation sweeps, the bootstrap and the effective context length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.planted_dependency import (
    DISTANCE,
    VOCAB_SIZE,
    planted_sequences,
    random_sequences,
    train_planted_model,
    trained_planted_model,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seqlm.analysis.span import (
    ALL_GROUPS,
    SPAN,
    TRUNCATION,
    SpanSweepConfig,
    bootstrap_perplexity_gain,
    context_batches,
    effective_context_length,
    plot_effective_context,
    plot_loss_vs_window,
    span_sweep,
    target_log_probs,
)
from seqlm.errors import ConfigError
from seqlm.evaluation.scores import prediction_targets
from seqlm.model import GPT, GPTConfig


def random_model(block_size: int = 8, **overrides) -> GPT:
    torch.manual_seed(0)
    values = {"vocab_size": 12, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": block_size}
    values.update(overrides)
    return GPT(GPTConfig(init_std=0.3, **values)).eval()


def direct_log_prob(model: GPT, inputs: np.ndarray, true_id: int, **call) -> float:
    with torch.no_grad():
        logits = model(torch.as_tensor(inputs[None]), **call).logits[0, -1]
    return float(torch.log_softmax(logits.double(), dim=-1)[true_id])


def test_truncation_predicts_each_target_from_exactly_its_last_w_tokens() -> None:
    model = random_model(block_size=8)
    sequences = random_sequences([3, 7, 9, 14])  # 9 and 14 exceed the block size
    targets = prediction_targets(sequences, 12)
    for w in (1, 3, 8):
        got = target_log_probs(model, targets, truncation=w, batch_tokens=20)
        for t in range(len(targets)):
            seq = sequences[int(targets.sequence[t])]
            p = int(targets.position[t])
            if p <= w:  # the whole prefix fits: same as full context
                expected = direct_log_prob(model, seq[:p], int(seq[p]))
            else:
                expected = direct_log_prob(model, seq[p - w : p], int(seq[p]))
            assert got[t] == pytest.approx(expected, abs=1e-5), (w, t)


def test_full_context_and_spans_match_the_model_on_whole_sequences() -> None:
    model = random_model(block_size=16)
    sequences = random_sequences([2, 5, 11, 16])
    targets = prediction_targets(sequences, 12)
    for span in ("config", 2, 5):
        got = target_log_probs(model, targets, attention_span=span, batch_tokens=17)
        expected = []
        for seq in sequences:
            with torch.no_grad():
                logits = model(torch.as_tensor(seq[None, :-1]), attention_span=span).logits[0]
            rows = torch.log_softmax(logits.double(), dim=-1)
            expected += rows[torch.arange(len(seq) - 1), torch.as_tensor(seq[1:])].tolist()
        np.testing.assert_allclose(got, expected, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    context=st.integers(1, 12),
    stride_share=st.floats(0.01, 1.0),
    truncation=st.one_of(st.none(), st.integers(1, 12)),
    batch_tokens=st.integers(1, 64),
)
# Found by Hypothesis: every prefix shorter than w (and fewer tokens than w in all).
@example(lengths=[1], context=2, stride_share=1.0, truncation=2, batch_tokens=1)
def test_batches_predict_every_target_once(
    lengths, context, stride_share, truncation, batch_tokens
) -> None:
    """Full context covers every target exactly once; truncation covers exactly the
    targets whose prefix is longer than w, each from a window of w tokens ending there."""
    sequences = random_sequences(lengths, seed=len(lengths))
    targets = prediction_targets(sequences, 12)
    stride = max(1, int(stride_share * context))
    if truncation is not None and truncation > context:
        with pytest.raises(ConfigError):
            list(context_batches(targets, context=context, truncation=truncation))
        return
    seen = np.zeros(len(targets), dtype=np.int64)
    for batch in context_batches(
        targets,
        context=context,
        truncation=truncation,
        stride=stride,
        batch_tokens=batch_tokens,
    ):
        assert batch.inputs.shape[1] <= context
        seen[batch.target] += 1
        kept = batch.inputs[batch.rows, batch.cols].numpy()
        # The kept position holds the token just before its target.
        np.testing.assert_array_equal(kept, targets.previous[batch.target])
        np.testing.assert_array_equal(batch.true_ids.numpy(), targets.token[batch.target])
    expected = np.ones(len(targets)) if truncation is None else targets.position > truncation
    np.testing.assert_array_equal(seen, expected.astype(np.int64))


def test_bootstrap_of_a_constant_increase_is_that_increase() -> None:
    sequence = np.repeat(np.arange(10), 3)
    gains = bootstrap_perplexity_gain(np.full(30, 0.02), sequence, resamples=50, seed=1)
    np.testing.assert_allclose(gains, np.expm1(0.02))


def test_bootstrap_weights_tokens_and_resamples_whole_sequences() -> None:
    # Two sequences: one long with no increase, one short with a large one. Resamples
    # hold 0, 1 or 2 copies of each, so only three means are possible.
    increase = np.array([0.0] * 9 + [1.0])
    sequence = np.array([0] * 9 + [1])
    gains = bootstrap_perplexity_gain(increase, sequence, resamples=400, seed=0)
    possible = np.expm1(np.array([0.0, 1 / 10, 1.0]))
    assert np.all(np.isclose(gains[:, None], possible[None]).any(axis=1))
    again = bootstrap_perplexity_gain(increase, sequence, resamples=400, seed=0)
    np.testing.assert_array_equal(gains, again)  # a fixed seed gives the same resamples
    # Draws (2, 0), (1, 1), (0, 2) have chances 1/4, 1/2, 1/4.
    expected = 0.5 * np.expm1(0.1) + 0.25 * np.expm1(1.0)
    assert gains.mean() == pytest.approx(expected, abs=0.12)


def test_effective_context_length_is_the_smallest_qualifying_window() -> None:
    assert effective_context_length([1, 2, 4, 8], [0.5, 0.02, 0.009, -0.001]) == 4
    assert effective_context_length([1, 2, 4], [0.5, 0.2, 0.011]) is None
    assert effective_context_length([4, 8], [0.03, 0.02], threshold=0.05) == 4


def test_config_and_input_errors() -> None:
    model = random_model(block_size=8)
    sequences = random_sequences([5, 6])
    with pytest.raises(ConfigError, match="block size"):
        span_sweep(model, sequences, config=SpanSweepConfig(windows=(4, 9)))
    with pytest.raises(ConfigError):
        SpanSweepConfig(windows=())
    with pytest.raises(ConfigError):
        SpanSweepConfig(modes=("sideways",))
    with pytest.raises(ConfigError, match="group labels"):
        span_sweep(model, sequences, ["a"], SpanSweepConfig(windows=(2,), bootstrap=5))
    with pytest.raises(ConfigError, match="no tokens"):
        span_sweep(model, [np.array([1])], config=SpanSweepConfig(windows=(2,), bootstrap=5))


@pytest.fixture(scope="module")
def planted_model() -> GPT:
    return trained_planted_model()


def test_planted_dependency_loss_drops_when_the_window_reaches_it(planted_model, tmp_path):
    """Acceptance: token t copies token t - d; with spans and truncations shorter than
    d the copies are guesses, from w = d on they are known, for both ways of limiting."""
    sequences = planted_sequences(40, seed=99)
    groups = ["odd" if i % 2 else "even" for i in range(40)]
    windows = (2, DISTANCE - 1, DISTANCE, DISTANCE + 3, 16)
    sweep = span_sweep(
        planted_model, sequences, groups, SpanSweepConfig(windows=windows, bootstrap=200)
    )
    overall = sweep.table.filter(sweep.table["group"] == ALL_GROUPS)
    full = float(overall["full_loss"][0])
    for mode in (SPAN, TRUNCATION):
        loss = dict(overall.filter(overall["mode"] == mode).select("window", "loss").iter_rows())
        assert loss[DISTANCE - 1] > full + 1.0, (mode, loss, full)
        assert loss[2] > full + 1.0, (mode, loss, full)
        assert loss[DISTANCE] < loss[DISTANCE - 1] - 1.0, (mode, loss)
        assert loss[DISTANCE] < full + 0.35, (mode, loss, full)
        assert loss[16] == pytest.approx(full, abs=0.02)
    # No window shorter than d can pass the 1% test; the last one (all the context) does.
    for group in (ALL_GROUPS, "odd", "even"):
        assert sweep.effective[group] is not None and sweep.effective[group] >= DISTANCE
    assert set(sweep.table["group"].unique()) == {ALL_GROUPS, "odd", "even"}
    assert sweep.table.height == 3 * 2 * len(windows)
    assert (sweep.table["gain_low"] <= sweep.table["perplexity_gain"] + 1e-12).all()
    for path in (
        plot_loss_vs_window(sweep, tmp_path / "loss.png", dpi=72),
        plot_effective_context(sweep, tmp_path / "effective.png", dpi=72),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.with_suffix(".svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert "5th-percentile" in sweep.definition()


@pytest.mark.slow
def test_training_with_a_span_shorter_than_the_dependency_cannot_learn_it() -> None:
    """Train-time span restriction through the model config (`attention_span`): with
    span d - 1 in both layers the copy source is still reachable in two hops, but with
    one layer it is not, and the loss stays at guessing level."""
    sequences = planted_sequences(40, seed=99)
    targets = prediction_targets(sequences, VOCAB_SIZE)
    losses = {}
    for span in (DISTANCE - 1, DISTANCE):
        model = train_planted_model(steps=300, n_layer=1, attention_span=span)
        assert model.config.attention_span == span
        losses[span] = -float(target_log_probs(model, targets).mean())
    assert losses[DISTANCE - 1] > losses[DISTANCE] + 1.0, losses


def test_conditioning_tokens_are_context_not_targets() -> None:
    """Issue 13 item 3: a conditioning token is read as context and never scored."""
    model = random_model(block_size=16)
    sequences = random_sequences([6, 9, 12])
    condition_id = 5
    for seq in sequences:
        seq[1] = condition_id  # a prefix token, as `seqlm corpus condition` writes it
    config = SpanSweepConfig(windows=(2,), bootstrap=5)
    every = span_sweep(model, sequences, config=config)
    without = span_sweep(model, sequences, config=config, context_only_ids=[condition_id])
    kept = every.targets.token != condition_id
    assert (~kept).sum() >= len(sequences)
    assert len(without.targets) == int(kept.sum())
    assert not np.isin(without.targets.token, [condition_id]).any()
    # the other targets keep their contexts, so their scores are the same
    np.testing.assert_allclose(without.full, every.full[kept], atol=1e-6)
