"""The training loop in one process: learning, accumulation, exact resume, early
stopping, callbacks, budgets, and models other than the GPT."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.training.callbacks import TrainCallback
from seqlm.training.checkpoint import RunFolder
from seqlm.training.config import TrainConfig
from seqlm.training.metrics_log import read_metrics
from seqlm.training.trainer import Trainer

CONTEXT = 32


def loaders(corpus, batch_size=4, accum=1, seed=0, packing="packed"):
    train = BatchLoader.from_corpus(
        corpus,
        "train",
        LoaderConfig(context=CONTEXT, batch_size=batch_size, seed=seed, packing=packing),
        accum_steps=accum,
    )
    tuning = BatchLoader.from_corpus(
        corpus, "tuning", LoaderConfig(context=CONTEXT, batch_size=4, shuffle=False)
    )
    return train, tuning


def config(**overrides) -> TrainConfig:
    values = {
        "max_steps": 30,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 5,
        "eval_every": 10,
        "eval_batches": 4,
        "checkpoint_every": 10,
        "log_every": 5,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_training_lowers_the_tuning_loss_and_writes_metrics(
    song_corpus, tiny_gpt_factory, tmp_path
):
    train, tuning = loaders(song_corpus)
    run = RunFolder(tmp_path / "run")
    run.write_config({"note": "test"})
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    trainer = Trainer(model, config(max_steps=60, eval_every=20), train, tuning, run=run)
    first = trainer.evaluate()
    result = trainer.fit()
    assert result.step == 60 and result.stop_reason == "budget"
    assert result.eval_loss < 0.6 * first
    assert result.best_eval_loss <= result.eval_loss
    records = read_metrics(run.metrics_path)
    kinds = [r["kind"] for r in records]
    assert kinds.count("train") == 12 and kinds.count("eval") == 3 and kinds[-1] == "final"
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records[-1]["lr"] < 1e-4  # decayed to (nearly) zero at the end
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in train_records)
    assert result.tokens == train_records[-1]["tokens"] > 0
    assert (run.best_dir / "model.safetensors").exists()
    assert [p.name for p in run.list_checkpoints()] == ["step_0000050", "step_0000060"]


def test_gradient_accumulation_matches_one_big_batch(song_corpus, tiny_gpt_factory):
    # No biases: the key projection's bias has a gradient that is zero in exact
    # arithmetic, and Adam scales its rounding noise up to a full-size step.
    results = []
    for batch_size, accum in ((8, 1), (4, 2), (2, 4)):
        train, _ = loaders(song_corpus, batch_size=batch_size, accum=accum)
        model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT, bias=False)
        settings = config(max_steps=4, batch_size=batch_size, grad_accum=accum, lr=1e-3)
        Trainer(model, settings, train).fit()
        results.append(parameters(model))
    for other in results[1:]:
        for name, tensor in results[0].items():
            torch.testing.assert_close(other[name], tensor, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
@pytest.mark.parametrize("positions", ["learned", "alibi"])
def test_resume_from_a_checkpoint_is_bitwise_exact(
    song_corpus, tiny_gpt_factory, tmp_path, ema_decay, positions
):
    # With weight averaging (train.ema_decay) the average is resumed from the checkpoint
    # too: the final (averaged) model, best/ and the optimizer's own weights all match.
    # ALiBi's slopes are not in the checkpoint; the resumed model rebuilds the same ones.
    settings = config(max_steps=20, checkpoint_every=7, eval_every=5, ema_decay=ema_decay)
    straight_run = RunFolder(tmp_path / "straight")
    train, tuning = loaders(song_corpus)
    straight = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT, dropout=0.1, positions=positions)
    Trainer(straight, settings, train, tuning, run=straight_run).fit()

    resumed_run = RunFolder(tmp_path / "resumed")
    train, tuning = loaders(song_corpus)
    first = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT, dropout=0.1, positions=positions)
    trainer = Trainer(first, settings, train, tuning, run=resumed_run)
    while trainer.counters.step < 9:  # "crash" after step 9: last checkpoint is step 7
        trainer.train_step()
        if trainer.counters.step % 7 == 0:
            trainer.save_checkpoint()

    train, tuning = loaders(song_corpus)
    second = tiny_gpt_factory(
        song_corpus.vocab_size, CONTEXT, dropout=0.1, seed=123, positions=positions
    )
    trainer = Trainer(second, settings, train, tuning, run=resumed_run)
    trainer.resume(resumed_run.latest_checkpoint())
    assert trainer.counters.step == 7
    trainer.fit()
    for name in ("model.safetensors", "best/model.safetensors"):
        assert (resumed_run.path / name).read_bytes() == (straight_run.path / name).read_bytes()
    last = resumed_run.list_checkpoints()[-1]
    raw = last / "model_raw.safetensors"
    assert raw.is_file() == (ema_decay > 0)
    if ema_decay:
        straight_raw = straight_run.list_checkpoints()[-1] / "model_raw.safetensors"
        assert raw.read_bytes() == straight_raw.read_bytes()
    assert resumed_run.read_checkpoint(last).step == 20


def test_early_stopping_stops_when_tuning_loss_stalls(song_corpus, tiny_gpt_factory):
    train, tuning = loaders(song_corpus)
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    # A learning rate this small cannot improve by min_delta between evaluations.
    settings = config(
        max_steps=200,
        lr=1e-7,
        eval_every=2,
        early_stopping=2,
        early_stopping_min_delta=0.01,
    )
    result = Trainer(model, settings, train, tuning).fit()
    assert result.stop_reason == "early_stopping"
    assert result.step == 6  # best at step 2, then two evaluations without improvement
    assert result.best_step == 2


def test_token_and_time_budgets(song_corpus, tiny_gpt_factory):
    train, _ = loaders(song_corpus)
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    result = Trainer(model, config(max_steps=None, max_tokens=1000), train).fit()
    tokens_per_step = result.tokens / result.step
    assert 1000 <= result.tokens < 1000 + tokens_per_step + 1
    train, _ = loaders(song_corpus)
    result = Trainer(model, config(max_steps=None, max_minutes=0.02), train).fit()
    assert result.stop_reason == "budget"
    assert 1.2 <= result.elapsed_s < 30


class Recorder(TrainCallback):
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[str] = []
        self.steps_seen = 0

    def on_train_start(self, trainer):
        self.events.append("start")

    def on_step_start(self, trainer, batches):
        self.events.append(f"step{trainer.counters.step}")

    def on_step_end(self, trainer, metrics):
        self.steps_seen += 1
        if metrics:
            self.events.append(f"log{trainer.counters.step}")

    def on_evaluate(self, trainer, eval_loss):
        self.events.append(f"eval{trainer.counters.step}")

    def on_train_end(self, trainer):
        self.events.append("end")

    def state_dict(self):
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        self.steps_seen = state["steps_seen"]


class ZeroLoss(TrainCallback):
    """Replaces the loss: a model trained on it does not change (all gradients zero)."""

    name = "zero_loss"

    def compute_loss(self, trainer, batch):
        return trainer.forward_loss(batch) * 0.0


def test_callbacks_run_in_order_and_their_state_is_checkpointed(
    song_corpus, tiny_gpt_factory, tmp_path
):
    train, tuning = loaders(song_corpus)
    run = RunFolder(tmp_path)
    recorder = Recorder()
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    Trainer(
        model,
        config(max_steps=4, log_every=2, eval_every=4, checkpoint_every=4),
        train,
        tuning,
        run=run,
        callbacks=[recorder],
    ).fit()
    assert recorder.events == [
        "start", "step0", "step1", "log2", "step2", "step3", "log4", "eval4", "end"
    ]  # fmt: skip
    assert run.latest_checkpoint().state["callbacks"] == {"recorder": {"steps_seen": 4}}
    restored = Recorder()
    trainer = Trainer(
        tiny_gpt_factory(song_corpus.vocab_size, CONTEXT), config(), train, run=run,
        callbacks=[restored],
    )  # fmt: skip
    trainer.resume(run.latest_checkpoint())
    assert restored.steps_seen == 4


def test_a_callback_can_replace_the_loss(song_corpus, tiny_gpt_factory):
    train, _ = loaders(song_corpus)
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    before = parameters(model)
    Trainer(model, config(max_steps=3, weight_decay=0.0), train, callbacks=[ZeroLoss()]).fit()
    for name, tensor in parameters(model).items():
        assert torch.equal(tensor, before[name]), name


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor


class TinyLSTM(nn.Module):
    """Not a GPT: the trainer only needs the forward signature."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, vocab_size)

    def forward(self, idx, targets=None, *, doc_ids=None, position_ids=None):
        hidden, _ = self.lstm(self.embed(idx))
        logits = self.head(hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return Output(logits, loss)


def test_any_module_with_the_forward_signature_trains(song_corpus, tmp_path):
    train, tuning = loaders(song_corpus, packing="padded")
    torch.manual_seed(0)
    model = TinyLSTM(song_corpus.vocab_size)
    run = RunFolder(tmp_path)
    trainer = Trainer(model, config(max_steps=40, eval_every=20), train, tuning, run=run)
    first = trainer.evaluate()
    result = trainer.fit()
    assert result.eval_loss < 0.8 * first
    saved = load_file(run.path / "model.safetensors")
    assert set(saved) == set(model.state_dict())


def test_unknown_device_or_bad_parallel_choice_is_a_config_error(song_corpus, tiny_gpt_factory):
    from seqlm.errors import ConfigError

    train, _ = loaders(song_corpus)
    with pytest.raises(ConfigError, match="device"):
        Trainer(tiny_gpt_factory(song_corpus.vocab_size, CONTEXT), config(device="nonsense"), train)
    with pytest.raises(ConfigError, match="must be one of"):
        config(parallel="pipeline")


def test_resume_when_some_parameters_never_had_a_gradient(song_corpus, tmp_path):
    class WithSpare(TinyLSTM):
        def __init__(self, vocab_size):
            super().__init__(vocab_size)
            self.spare = nn.Linear(4, 4)  # not used by forward: no optimizer state

    run = RunFolder(tmp_path)
    train, _ = loaders(song_corpus)
    torch.manual_seed(0)
    trainer = Trainer(WithSpare(song_corpus.vocab_size), config(max_steps=3), train, run=run)
    trainer.fit()
    train, _ = loaders(song_corpus)
    torch.manual_seed(1)
    again = Trainer(WithSpare(song_corpus.vocab_size), config(max_steps=3), train, run=run)
    again.resume(run.latest_checkpoint())
    assert again.counters.step == 3
    for name, tensor in trainer.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[name], tensor), name


class RecordingProgress:
    """A progress bar that remembers every line it was asked to show."""

    def __init__(self) -> None:
        self.lines: list[dict[str, object]] = []

    def start(self, description: str, total: float | None = None) -> None:
        pass

    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, **fields: object) -> None:
        self.lines.append(dict(fields))

    def finish(self) -> None:
        pass


def test_progress_line_shows_the_latest_tuning_loss(song_corpus, tiny_gpt_factory):
    """Issue 20: the line showed the previous evaluation's loss until the next log step."""
    train, tuning = loaders(song_corpus)
    model = tiny_gpt_factory(song_corpus.vocab_size, CONTEXT)
    progress = RecordingProgress()
    settings = config(max_steps=20, eval_every=10, log_every=10, early_stopping=0)
    trainer = Trainer(model, settings, train, tuning, progress=progress)
    seen: list[float] = []
    original = trainer.evaluate_and_track

    def track() -> float:
        loss = original()
        seen.append(loss)
        assert progress.lines[-1]["tuning"] == f"{loss:.4f}"  # shown at once
        assert "loss" in progress.lines[-1]  # the other fields are kept
        return loss

    trainer.evaluate_and_track = track
    trainer.fit()
    assert len(seen) == 2 and seen[0] != seen[1]
