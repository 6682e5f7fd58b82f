"""Selective backprop: percentiles, the expected kept fraction, costs, state."""

from __future__ import annotations

import math

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.training.efficient.selective_backprop import (
    RecentLosses,
    SelectiveBackprop,
    SelectiveBackpropOptions,
    expected_kept_fraction,
    loss_percentile,
)


def test_percentile_of_a_loss_among_recent_ones():
    recent = sorted([1.0, 2.0, 3.0, 4.0])
    assert loss_percentile(0.5, recent) == 0.0
    assert loss_percentile(2.0, recent) == 0.5
    assert loss_percentile(9.0, recent) == 1.0
    assert loss_percentile(1.0, []) == 1.0


def test_window_keeps_the_latest_losses_sorted():
    window = RecentLosses(3)
    for loss in (5.0, 1.0, 3.0, 2.0):
        window.add(loss)
    assert window.values() == [1.0, 3.0, 2.0]
    assert window.sorted == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_kept_fraction_matches_the_expected_one(beta):
    callback = SelectiveBackprop(SelectiveBackpropOptions(beta=beta, history=512))
    losses = (
        torch.distributions.Exponential(1.0)
        .sample(
            (20_000,),
        )
        .tolist()
    )
    generator = torch.Generator().manual_seed(1)
    kept = []
    for start in range(0, len(losses), 16):
        kept += callback.select(losses[start : start + 16], generator)
    rate = sum(kept[2000:]) / len(kept[2000:])  # after the window has filled
    expected = expected_kept_fraction(beta)
    assert expected == pytest.approx(1 / (beta + 1))
    assert abs(rate - expected) < 0.02


def test_higher_losses_are_kept_more_often():
    callback = SelectiveBackprop(SelectiveBackpropOptions(beta=2.0, history=256))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        callback.select(torch.rand(16).tolist(), generator)
    low = sum(callback.select([0.05] * 16, generator))
    high = sum(callback.select([0.95] * 16, generator))
    assert high > low


def test_options_are_checked():
    with pytest.raises(ConfigError):
        SelectiveBackpropOptions(beta=0)
    with pytest.raises(ConfigError):
        SelectiveBackpropOptions(history=0)


def test_training_charges_forward_passes_and_restores_state(song_corpus, tiny_gpt_factory):
    from seqlm.corpus.loader import BatchLoader, LoaderConfig
    from seqlm.training.config import TrainConfig
    from seqlm.training.efficient.reference_time import CostMeter, CostModel
    from seqlm.training.trainer import Trainer

    model = tiny_gpt_factory(song_corpus.vocab_size, context=32)
    cost_model = CostModel("flops", model.config)
    meter = CostMeter(cost_model)
    selective = SelectiveBackprop()
    train = BatchLoader.from_corpus(song_corpus, "train", LoaderConfig(context=32, batch_size=8))
    Trainer(model, TrainConfig(max_steps=8), train, callbacks=[meter, selective]).fit()
    fraction = selective.rows_kept / selective.rows_seen
    assert 0.2 < fraction < 0.9
    per_token = cost_model.cost("train", model.config.n_layer, 1)
    tokens = 8 * 8 * 33  # an upper bound: 8 steps of 8 rows of at most 33 tokens
    # Every token pays a forward (a third), kept ones a training pass too.
    assert meter.used < per_token * tokens * (1 / 3 + fraction + 0.05)
    assert meter.used > per_token * tokens * 0.5 * (1 / 3)
    restored = SelectiveBackprop()
    restored.load_state_dict(selective.state_dict())
    assert restored.recent.sorted == selective.recent.sorted
    assert math.isclose(restored.rows_kept, selective.rows_kept)
