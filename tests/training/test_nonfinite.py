"""The non-finite guard inside the trainer: a bad step makes no update, the skip
budget lets training continue, and resume keeps the count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlm.training.callbacks import TrainCallback
from seqlm.training.checkpoint import RunFolder
from seqlm.training.nonfinite import TrainingDiverged
from seqlm.training.trainer import Trainer

from .test_trainer import CONTEXT, config, loaders, parameters


class PoisonStep(TrainCallback):
    """Makes the loss NaN on the given steps (1-based, the step being taken)."""

    name = "poison"

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps

    def compute_loss(self, trainer: Trainer, batch):
        loss = trainer.forward_loss(batch)
        if trainer.counters.step + 1 in self.steps:
            return loss * float("nan")
        return loss


class Snapshot(TrainCallback):
    name = "snapshot"

    def __init__(self) -> None:
        self.before: dict[int, dict] = {}
        self.after: dict[int, dict] = {}

    def on_step_start(self, trainer, batches) -> None:
        self.before[trainer.counters.step + 1] = parameters(trainer.module)

    def on_step_end(self, trainer, metrics) -> None:
        self.after[trainer.counters.step] = parameters(trainer.module)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_skipped_steps_make_no_update_and_training_continues(
    song_corpus, tiny_gpt_factory, tmp_path
):
    train, tuning = loaders(song_corpus)
    model: nn.Module = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    snapshot = Snapshot()
    run = RunFolder(tmp_path / "run")
    trainer = Trainer(
        model,
        config(max_steps=12, nonfinite_skips=2),
        train,
        tuning,
        run=run,
        callbacks=[PoisonStep({4, 9}), snapshot],
    )
    result = trainer.fit()
    assert result.step == 12 and result.stop_reason == "budget"
    assert _same(snapshot.before[4], snapshot.after[4])  # the NaN step changed nothing
    assert not _same(snapshot.before[5], snapshot.after[5])  # the next one learns
    assert trainer.nonfinite.skipped == 2
    assert run.read_checkpoint(run.list_checkpoints()[-1]).state["nonfinite_skipped"] == 2


def test_one_bad_step_too_many_stops_with_the_step(song_corpus, tiny_gpt_factory, tmp_path):
    train, tuning = loaders(song_corpus)
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    run = RunFolder(tmp_path / "run")
    trainer = Trainer(
        model,
        config(max_steps=20, nonfinite_skips=1, checkpoint_every=5),
        train,
        tuning,
        run=run,
        callbacks=[PoisonStep({3, 7})],
    )
    with pytest.raises(TrainingDiverged, match="at step 7.*last checkpoint .finite. is step 5"):
        trainer.fit()
    assert [p.name for p in run.list_checkpoints()] == ["step_0000005"]
