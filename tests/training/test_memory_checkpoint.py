"""`train.memory_checkpoint`: what auto picks, that the trainer attaches it and records
it in config.json, and that a run with it trains exactly as one without."""

from __future__ import annotations

import json

import pytest
import torch

from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.errors import ConfigError
from seqlm.training.checkpoint import RunFolder
from seqlm.training.config import TrainConfig
from seqlm.training.efficient import sublayer_checkpoint
from seqlm.training.efficient.long_context_memory import (
    SUBLAYER_MIN_CONTEXT,
    memory_checkpoint_choice,
)
from seqlm.training.trainer import Trainer

CONTEXT = 2048  # where auto starts checkpointing sublayers (attention is block-wise)


def test_auto_checkpoints_sublayers_on_the_cpu_from_context_2048():
    assert SUBLAYER_MIN_CONTEXT == CONTEXT
    assert memory_checkpoint_choice("auto", 2048, "cpu") == "sublayers"
    assert memory_checkpoint_choice("auto", 8192, "cpu") == "sublayers"
    # At 1,024 the block-wise step without it is faster and beats the dense one.
    assert memory_checkpoint_choice("auto", 2047, "cpu") == "none"
    assert memory_checkpoint_choice("auto", 1024, "cpu") == "none"
    assert memory_checkpoint_choice("auto", 8192, "cuda") == "none"
    assert memory_checkpoint_choice("auto", 8192, "cpu", compiled=True) == "none"
    for setting in ("none", "blocks", "sublayers"):
        assert memory_checkpoint_choice(setting, 64, "cpu") == setting
    with pytest.raises(ValueError, match="memory_checkpoint must be one of"):
        memory_checkpoint_choice("layers", 1024, "cpu")
    with pytest.raises(ConfigError, match="train.memory_checkpoint"):
        TrainConfig.from_dict({"memory_checkpoint": "layers"})


def _train(corpus, tiny_gpt_factory, folder, setting: str):
    loader = BatchLoader.from_corpus(
        corpus, "train", LoaderConfig(context=CONTEXT, batch_size=2, seed=0)
    )
    run = RunFolder(folder)
    run.write_config({"note": "test"})
    model = tiny_gpt_factory(corpus.vocab_size, CONTEXT, positions="rotary")
    settings = {"max_steps": 2, "batch_size": 2, "lr": 1e-2, "warmup_steps": 1}
    config = TrainConfig(
        **settings, eval_every=100, checkpoint_every=100, device="cpu", memory_checkpoint=setting
    )
    trainer = Trainer(model, config, loader, run=run)
    result = trainer.fit()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return trainer, result, state, json.loads(run.config_path.read_text())


def test_the_trainer_attaches_sublayers_exactly_and_records_it(
    song_corpus, tiny_gpt_factory, tmp_path
):
    plain = _train(song_corpus, tiny_gpt_factory, tmp_path / "none", "none")
    auto = _train(song_corpus, tiny_gpt_factory, tmp_path / "auto", "auto")
    assert plain[3]["memory"] == {"setting": "none", "checkpoint": "none", "lean_mlp": True}
    assert auto[3]["memory"] == {"setting": "auto", "checkpoint": "sublayers", "lean_mlp": True}
    assert auto[3]["note"] == "test"  # the rest of config.json is kept
    block = auto[0].module.blocks[0]
    assert block.forward.__func__ is sublayer_checkpoint.sublayer_checkpointed_forward
    assert "forward" not in vars(plain[0].module.blocks[0])
    assert auto[1].train_loss == pytest.approx(plain[1].train_loss, abs=1e-5)
    for name, value in plain[2].items():
        torch.testing.assert_close(auto[2][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_token_chunked_checkpoint_takes_several_row_aligned_inputs():
    generator = torch.Generator().manual_seed(4)
    layer = torch.nn.Linear(6, 6)
    x, a = (torch.randn(3, 7, 6, generator=generator, requires_grad=True) for _ in range(2))
    weights = torch.randn(3, 7, 6, generator=generator)

    def fn(h, b):
        return torch.tanh(h + layer(b))

    (fn(x, a) * weights).sum().backward()
    want = [x.grad.clone(), a.grad.clone(), *(p.grad.clone() for p in layer.parameters())]
    x.grad = a.grad = None
    layer.zero_grad(set_to_none=True)
    y = sublayer_checkpoint.token_chunked_checkpoint(fn, (x, a), list(layer.parameters()), 4)
    (y * weights).sum().backward()
    got = [x.grad, a.grad, *(p.grad for p in layer.parameters())]
    for u, v in zip(got, want, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
