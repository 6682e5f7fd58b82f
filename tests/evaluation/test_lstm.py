"""The LSTM baseline: document restarts, the GPT's signature, training by the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.eval_fixtures import small_finch_corpus  # noqa: F401 (autouse)

from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.lstm import (
    LSTMConfig,
    LSTMLanguageModel,
    lstm_baseline_run,
    lstm_config_like,
    run_finished,
    train_lstm,
)
from seqlm.evaluation.model_scorer import ModelScorer, load_run_model
from seqlm.training.config import TrainConfig
from seqlm.training.trainer import Trainer


def tiny_lstm(vocab_size: int = 20, **overrides) -> LSTMLanguageModel:
    torch.manual_seed(0)
    return LSTMLanguageModel(LSTMConfig(vocab_size=vocab_size, n_embd=16, **overrides)).eval()


def test_state_restarts_at_every_document_of_a_packed_row() -> None:
    model = tiny_lstm()
    a, b, c = (torch.randint(3, 20, (1, n)) for n in (5, 7, 4))
    row = torch.cat([a, b, c], dim=1)
    doc_ids = torch.tensor([[0] * 5 + [1] * 7 + [2] * 4])
    packed = model(row, doc_ids=doc_ids).logits
    alone = [model(x).logits for x in (a, b, c)]
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), atol=1e-6, rtol=1e-6)
    # without doc ids the second document sees the first: the restart is doing something
    assert not torch.allclose(model(row).logits[:, 5:12], alone[1], atol=1e-4)
    # two rows, one of them a single document
    rows = torch.cat([row, torch.randint(3, 20, (1, 16))])
    ids = torch.cat([doc_ids, torch.zeros(1, 16, dtype=torch.long)])
    torch.testing.assert_close(model(rows, doc_ids=ids).logits[:1], packed, atol=1e-6, rtol=1e-6)


def test_forward_has_the_gpt_signature_and_loss() -> None:
    model = tiny_lstm()
    idx = torch.randint(3, 20, (2, 9))
    targets = torch.randint(3, 20, (2, 9))
    targets[0, :3] = -100
    out = model(idx, targets, doc_ids=None, position_ids=None)
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)
    assert model(idx).loss is None
    for bad in ({"n_layer": 0}, {"dropout": 1.0}, {"tie_embeddings": 1}):
        with pytest.raises(ConfigError):
            LSTMConfig(vocab_size=10, **bad)
    with pytest.raises(ConfigError, match="unknown"):
        LSTMConfig.from_dict({"vocab_size": 10, "heads": 2})
    like = lstm_config_like({"vocab_size": 30, "n_embd": 64, "block_size": 128, "n_layer": 6})
    assert (like.n_embd, like.block_size, like.n_layer, like.dropout) == (64, 128, 2, 0.0)
    # the GPT's regularisation carries over: an unregularised LSTM beside a regularised
    # GPT would compare regularisers, not models
    regularised = lstm_config_like(
        {"vocab_size": 30, "n_embd": 64, "block_size": 8, "dropout": 0.2}
    )
    assert regularised.dropout == 0.2


def test_the_trainer_teaches_it_a_deterministic_pattern() -> None:
    # Sequences [BOS] 5 6 7 8 5 6 7 8 ... [EOS]: after two steps the next id is certain.
    pattern = [1, *([5, 6, 7, 8] * 6), 2]
    tokens = np.array(pattern * 40, dtype=np.uint16)
    lengths = np.full(40, len(pattern))
    offsets = np.arange(40) * len(pattern)
    loader = BatchLoader(tokens, offsets, lengths, LoaderConfig(context=32, batch_size=8))
    model = LSTMLanguageModel(LSTMConfig(vocab_size=10, n_embd=32, block_size=32))
    config = TrainConfig(max_steps=60, warmup_steps=5, lr=1e-2, device="cpu", log_every=10)
    result = Trainer(model, config, loader).fit()
    assert result.step == 60
    assert result.train_loss < 0.3  # mean of the last 10 steps; it starts at ~ln(10) = 2.3


def test_train_lstm_writes_a_run_that_is_reused(tmp_path) -> None:
    corpus = small_finch_corpus(tmp_path / "corpus")
    train = TrainConfig(
        max_steps=6, batch_size=4, eval_every=3, eval_batches=2, weight_decay=0.3
    ).to_dict()
    gpt_model = {"vocab_size": corpus.vocab_size, "n_embd": 16, "block_size": 32, "dropout": 0.1}
    folder, trained = lstm_baseline_run(corpus, tmp_path / "lstm", gpt_model, train)
    assert trained and run_finished(folder)
    loaded = load_run_model(folder)
    assert loaded.model_type == "lstm" and loaded.config["train"]["max_steps"] == 6
    assert loaded.config["model"]["dropout"] == 0.1  # the GPT's dropout and weight decay
    assert loaded.config["train"]["weight_decay"] == 0.3
    scores = ModelScorer(loaded.model, device="cpu").score([np.asarray(corpus.sequence(0))])
    assert np.isfinite(scores.log_prob).all()
    again, trained_again = lstm_baseline_run(corpus, folder, gpt_model, train)
    assert again == folder and not trained_again
    # a GPT run regularised otherwise gets a new baseline, not the stale one
    _, retrained = lstm_baseline_run(corpus, folder, {**gpt_model, "dropout": 0.0}, train)
    assert retrained and load_run_model(folder).config["model"]["dropout"] == 0.0
    # a different budget for the baseline goes through `overrides`
    _, retrained = lstm_baseline_run(
        corpus, tmp_path / "lstm2", gpt_model, train, overrides={"max_steps": 3}
    )
    assert retrained and load_run_model(tmp_path / "lstm2").step == 3
    with pytest.raises(CorpusError, match="vocabulary"):
        train_lstm(corpus.path, tmp_path / "bad", LSTMConfig(vocab_size=3), TrainConfig())


def test_the_baseline_gets_the_runs_weight_averaging(tmp_path) -> None:
    import json

    corpus = small_finch_corpus(tmp_path / "corpus")
    train = TrainConfig(max_steps=6, batch_size=4, eval_every=3, eval_batches=2).to_dict()
    gpt_model = {"vocab_size": corpus.vocab_size, "n_embd": 16, "block_size": 32}
    averaged = {**train, "ema_decay": 0.9}
    folder, trained = lstm_baseline_run(corpus, tmp_path / "lstm", gpt_model, averaged)
    assert trained and load_run_model(folder).config["train"]["ema_decay"] == 0.9
    assert (folder / "checkpoints" / "step_0000006" / "model_raw.safetensors").is_file()
    # a GPT run without averaging gets a baseline without it
    _, retrained = lstm_baseline_run(corpus, folder, gpt_model, train)
    assert retrained and load_run_model(folder).config["train"]["ema_decay"] == 0.0
    # a baseline written before the setting existed ran without it: reused, not retrained
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    del config["train"]["ema_decay"]
    config_path.write_text(json.dumps(config))
    _, trained_again = lstm_baseline_run(corpus, folder, gpt_model, train)
    assert not trained_again
    _, trained_again = lstm_baseline_run(corpus, folder, gpt_model, averaged)
    assert trained_again
