"""Progressive layer dropping and LayerDrop: the schedule, per-layer keep rates, the
draws, no dropping at evaluation, cost charged for the blocks really run."""

from __future__ import annotations

import math

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.training.efficient.layer_drop import (
    LayerDrop,
    LayerDropOptions,
    ProgressiveLayerDrop,
    block_generator,
    draw_kept_blocks,
    pld_keep_probabilities,
    pld_theta,
)


def test_theta_schedule_matches_the_formula():
    assert pld_theta(0, 0.5, 0.01) == 1.0
    for step in (1, 10, 100, 1000):
        expected = (1 - 0.5) * math.exp(-0.01 * step) + 0.5
        assert pld_theta(step, 0.5, 0.01) == pytest.approx(expected, rel=1e-12)
    assert pld_theta(10**6, 0.3, 0.01) == pytest.approx(0.3)
    values = [pld_theta(t, 0.5, 0.05) for t in range(50)]
    assert values == sorted(values, reverse=True)


def test_keep_probabilities_match_the_formula():
    theta, layers = 0.6, 5
    keep = pld_keep_probabilities(theta, layers)
    assert keep == pytest.approx([1 - (1 - theta) * k / layers for k in range(1, layers + 1)])
    assert keep[-1] == pytest.approx(theta)  # the last layer is kept with theta itself
    assert pld_keep_probabilities(1.0, 4) == [1.0] * 4


def test_draws_keep_each_layer_at_its_rate():
    keep = pld_keep_probabilities(0.5, 4)  # 0.875, 0.75, 0.625, 0.5
    generator = torch.Generator().manual_seed(0)
    n = 4_000
    counts = torch.zeros(4)
    for _ in range(n):
        counts += torch.tensor(draw_kept_blocks(keep, generator), dtype=torch.float32)
    for rate, p in zip((counts / n).tolist(), keep, strict=True):
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_block_draws_do_not_depend_on_anything_but_seed_step_micro():
    keep = [0.5] * 8
    first = draw_kept_blocks(keep, block_generator(3, 17, 1))
    assert first == draw_kept_blocks(keep, block_generator(3, 17, 1))
    others = {tuple(draw_kept_blocks(keep, block_generator(3, s, 1))) for s in range(20)}
    assert len(others) > 1


def test_options_are_checked():
    with pytest.raises(ConfigError):
        LayerDropOptions(theta_bar=0.0)
    with pytest.raises(ConfigError):
        LayerDropOptions(gamma=-1)
    with pytest.raises(ConfigError):
        LayerDropOptions(rate=1.0)


def _trainer(song_corpus, tiny_gpt_factory, callbacks, steps=6):
    from seqlm.corpus.loader import BatchLoader, LoaderConfig
    from seqlm.training.config import TrainConfig
    from seqlm.training.trainer import Trainer

    model = tiny_gpt_factory(song_corpus.vocab_size, context=32, n_layer=4)
    cfg = LoaderConfig(context=32, batch_size=4)
    train = BatchLoader.from_corpus(song_corpus, "train", cfg)
    tuning = BatchLoader.from_corpus(song_corpus, "tuning", LoaderConfig(32, 4, shuffle=False))
    config = TrainConfig(max_steps=steps, eval_every=1000, eval_batches=2, warmup_steps=0)
    return Trainer(model, config, train, tuning, callbacks=callbacks)


def test_pld_charges_fewer_flops_and_never_drops_at_evaluation(song_corpus, tiny_gpt_factory):
    from seqlm.training.efficient.reference_time import CostMeter, CostModel

    plain = _trainer(song_corpus, tiny_gpt_factory, [])
    cost_model = CostModel("flops", plain.module.config)
    meter = CostMeter(cost_model)
    pld = ProgressiveLayerDrop(LayerDropOptions(theta_bar=0.2, gamma=1.0))
    trainer = _trainer(song_corpus, tiny_gpt_factory, [meter, pld], steps=4)
    trainer.fit()
    full = cost_model.cost("train", 4, 1)
    assert meter.used < full * trainer.counters.tokens
    assert meter.used >= cost_model.cost("train", 0, 1) * trainer.counters.tokens
    assert 0 < pld.kept_blocks_sum / pld.micro_batches < 4
    # Evaluation runs every block: the same weights evaluate the same with or without PLD.
    plain.module.load_state_dict(trainer.module.state_dict())
    assert trainer.evaluate() == pytest.approx(plain.evaluate(), abs=1e-9)


def test_layerdrop_with_rate_zero_is_the_plain_step(song_corpus, tiny_gpt_factory):
    plain = _trainer(song_corpus, tiny_gpt_factory, [], steps=3)
    dropped = _trainer(song_corpus, tiny_gpt_factory, [LayerDrop(LayerDropOptions(rate=0.0))], 3)
    plain.fit()
    dropped.fit()
    for a, b in zip(plain.module.parameters(), dropped.module.parameters(), strict=True):
        torch.testing.assert_close(a, b)
