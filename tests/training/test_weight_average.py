"""Weight averaging (`train.ema_decay`): the run's model, best/ and the tuning loss are
the exponential moving average of the weights; the optimizer's own trajectory is
unchanged by it. (Exact resume with the average: tests/training/test_trainer.py and
test_kill_resume.py.)"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from seqlm.errors import ConfigError
from seqlm.training.callbacks import TrainCallback
from seqlm.training.checkpoint import RunFolder
from seqlm.training.config import TrainConfig
from seqlm.training.trainer import Trainer
from seqlm.training.weight_average import decay_for_span, step_decay

from .test_trainer import CONTEXT, config, loaders

DECAY = 0.8


class Snapshots(TrainCallback):
    """The module's parameters after every optimizer step."""

    name = "snapshots"

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, trainer, metrics):
        named = trainer.module.named_parameters()
        self.steps.append({k: v.detach().clone() for k, v in named})


def _fit(corpus, factory, folder, ema_decay, callbacks=()):
    train, tuning = loaders(corpus)
    model = factory(corpus.vocab_size, CONTEXT, dropout=0.1)
    run = RunFolder(folder)
    settings = config(max_steps=12, eval_every=4, checkpoint_every=6, ema_decay=ema_decay)
    trainer = Trainer(model, settings, train, tuning, run=run, callbacks=callbacks)
    return trainer, trainer.fit(), run


def test_the_saved_model_is_the_moving_average_of_the_same_trajectory(
    song_corpus, tiny_gpt_factory, tmp_path
):
    snapshots = Snapshots()
    plain, _, plain_run = _fit(song_corpus, tiny_gpt_factory, tmp_path / "plain", 0.0, [snapshots])
    assert not (plain_run.list_checkpoints()[-1] / "model_raw.safetensors").exists()
    trainer, result, run = _fit(song_corpus, tiny_gpt_factory, tmp_path / "ema", DECAY)

    # The optimizer's own weights follow the run without the average, exactly.
    raw = load_file(run.list_checkpoints()[-1] / "model_raw.safetensors")
    for name, tensor in load_file(plain_run.path / "model.safetensors").items():
        assert torch.equal(raw[name], tensor), name

    # The run's model is the average of that trajectory, started at the initial weights,
    # and best/ the average at the best evaluation.
    best = run.best_checkpoint()
    torch.manual_seed(0)
    factory = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT, dropout=0.1)
    expected = {k: v.detach().clone() for k, v in factory.named_parameters()}
    at_best = None
    for step, weights in enumerate(snapshots.steps, start=1):
        d = step_decay(DECAY, step)
        for name in expected:
            expected[name] = d * expected[name] + (1 - d) * weights[name]
        if step == best.step:
            at_best = {k: v.clone() for k, v in expected.items()}
    saved = load_file(run.path / "model.safetensors")
    saved_best = load_file(run.best_dir / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=1e-6)
        torch.testing.assert_close(saved_best[name], at_best[name], rtol=0, atol=1e-6)
        assert not torch.equal(saved[name], raw[name]), name  # not the raw weights
    # ... the module is left holding it, and the tuning loss was measured with it.
    for name, param in trainer.module.named_parameters():
        assert torch.equal(param.detach(), saved[name]), name
    assert trainer.evaluate() == result.eval_loss
    assert best.state["loss"] == result.best_eval_loss


def test_the_average_never_changes_the_training_trajectory(song_corpus, tiny_gpt_factory, tmp_path):
    _, plain, _ = _fit(song_corpus, tiny_gpt_factory, tmp_path / "plain", 0.0)
    _, averaged, _ = _fit(song_corpus, tiny_gpt_factory, tmp_path / "ema", DECAY)
    assert averaged.train_loss == plain.train_loss  # same trajectory, same train loss
    assert averaged.eval_loss != plain.eval_loss  # scored with other weights
    assert TrainConfig().ema_decay == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(value):
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=value)


def test_decay_rules():
    assert decay_for_span(218) == pytest.approx(1 - 1 / 218)
    assert decay_for_span(1) == 0.0
    assert step_decay(0.99, 1) == pytest.approx(2 / 11)  # ramped at the start
    assert step_decay(0.99, 10_000) == 0.99
