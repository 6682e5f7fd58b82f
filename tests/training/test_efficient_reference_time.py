"""Cost in FLOPs or reference time: the table, the cost model, the budget that ends
training and drives the learning rate to zero, and exact resume with every method."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seqlm.errors import ConfigError, CorpusError
from seqlm.model import preset
from seqlm.model.flops import flops_per_token
from seqlm.training.efficient.reference_time import (
    CalibrationTable,
    CostMeter,
    CostModel,
    calibrate,
)


def _table(n_layer=2):
    return CalibrationTable(
        n_layer=n_layer,
        n_embd=32,
        context=16,
        batch_size=2,
        train_s_per_token=tuple(1e-6 * (1 + d) for d in range(n_layer + 1)),
        forward_s_per_token=tuple(3e-7 * (1 + d) for d in range(n_layer + 1)),
    )


def test_calibration_measures_every_depth_and_round_trips(tmp_path):
    config = preset("tiny", vocab_size=30, block_size=16)
    table = calibrate(config, batch_size=2, repeats=1, warmup=1)
    assert len(table.train_s_per_token) == config.n_layer + 1
    assert all(t > 0 for t in table.train_s_per_token + table.forward_s_per_token)
    table.save(tmp_path / "calibration.json")
    assert CalibrationTable.load(tmp_path / "calibration.json") == table
    (tmp_path / "bad.json").write_text(json.dumps({"n_layer": 2}))
    with pytest.raises(CorpusError):
        CalibrationTable.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        CalibrationTable(2, 32, 16, 2, (1.0, 2.0), (1.0, 1.0, 1.0))


def test_cost_models():
    config = preset("tiny", vocab_size=30, block_size=16, n_layer=4)
    flops = CostModel("flops", config)
    assert flops.cost("train", 4, 10) == pytest.approx(10 * flops_per_token(config, 16))
    shallow = preset("tiny", vocab_size=30, block_size=16, n_layer=2)
    assert flops.cost("train", 2, 1) == pytest.approx(flops_per_token(shallow, 16))
    assert flops.cost("forward", 4, 3) == pytest.approx(flops.cost("train", 4, 1))
    assert 0 < flops.cost("train", 0, 1) < flops.cost("train", 1, 1)

    config2 = preset("tiny", vocab_size=30, block_size=16)
    reference = CostModel("reference_s", config2, _table())
    assert reference.cost("train", 1, 100) == pytest.approx(2e-4)
    assert reference.cost("forward", 2, 10) == pytest.approx(9e-6)
    with pytest.raises(ConfigError):
        CostModel("reference_s", config2)
    with pytest.raises(ConfigError):
        CostModel("reference_s", config, _table())  # 4 layers, table of 2
    with pytest.raises(ConfigError):
        CostModel("joules", config2)


def test_cost_budget_ends_training_with_the_learning_rate_at_zero(song_corpus, tiny_gpt_factory):
    from seqlm.corpus.loader import BatchLoader, LoaderConfig
    from seqlm.training.config import TrainConfig
    from seqlm.training.trainer import Trainer

    model = tiny_gpt_factory(song_corpus.vocab_size, context=32)
    cost_model = CostModel("flops", model.config)
    step_cost = cost_model.cost("train", model.config.n_layer, 4 * 33)
    meter = CostMeter(cost_model, limit=5 * step_cost)
    train = BatchLoader.from_corpus(song_corpus, "train", LoaderConfig(context=32, batch_size=4))
    config = TrainConfig(max_steps=10**6, warmup_steps=0, decay="linear", log_every=1)
    trainer = Trainer(model, config, train, callbacks=[meter])
    lrs = []
    original = trainer.train_step

    def step_and_record():
        original()
        lrs.append(trainer.optimizer.param_groups[0]["lr"])

    trainer.train_step = step_and_record
    trainer.fit()
    assert meter.used >= meter.limit
    assert meter.used < meter.limit + step_cost
    assert trainer.counters.step >= 5
    assert lrs == sorted(lrs, reverse=True)
    # The last step starts with under one step's cost left: its rate is below 1/5 of
    # the peak, and it would be zero at the budget's end.
    assert lrs[-1] < config.lr * 1.01 * step_cost / meter.limit


class StopAt:
    """Interrupts a run at the start of a step (after the previous checkpoint)."""

    name = "stop"

    def __init__(self, step):
        self.step = step

    def __getattr__(self, hook):
        return lambda *args, **kwargs: None

    def on_step_start(self, trainer, batches):
        if trainer.counters.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["pld", "stacking", "selective_backprop"])
def test_resume_mid_run_gives_the_same_result(song_corpus, tmp_path, method):
    from seqlm.studies.efficiency import EfficiencyOptions, method_callbacks
    from seqlm.training.config import resolve_settings
    from seqlm.training.session import train_on_corpus

    options = EfficiencyOptions(methods=("baseline", method))
    sets = [
        "model.n_layer=4",
        "model.block_size=32",
        "train.batch=4",
        "train.steps=1000000",
        "train.checkpoint_every=3",
        "train.eval_every=3",
        "train.eval_batches=1",
    ]
    cost_model = CostModel(
        "flops", preset("tiny", vocab_size=song_corpus.vocab_size, block_size=32, n_layer=4)
    )
    limit = 7 * cost_model.cost("train", 4, 4 * 33)

    def callbacks(extra=()):
        return [CostMeter(cost_model, limit), *method_callbacks(method, options), *extra]

    settings = resolve_settings(sets=sets, preset="tiny")
    whole = train_on_corpus(song_corpus.path, tmp_path / "whole", settings, callbacks=callbacks())
    with pytest.raises(KeyboardInterrupt):
        train_on_corpus(
            song_corpus.path, tmp_path / "cut", settings, callbacks=callbacks([StopAt(4)])
        )
    resumed = train_on_corpus(
        song_corpus.path, tmp_path / "cut", resume=True, callbacks=callbacks()
    )
    assert resumed.step == whole.step
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    state_a = json.loads((tmp_path / "whole" / "state.json").read_text())["callbacks"]
    state_b = json.loads((tmp_path / "cut" / "state.json").read_text())["callbacks"]
    assert state_a["cost"]["used"] == state_b["cost"]["used"]
    assert state_a[method if method != "pld" else "pld"] == state_b[method]
