"""`--init RUN`: a run starts from another run's weights, token rows matched by string."""

from __future__ import annotations

import json

import pytest
import torch

from seqlm.corpus.conditioning import condition_corpus
from seqlm.errors import ConfigError
from seqlm.training.checkpoint import WEIGHTS_FILE, load_weights
from seqlm.training.config import resolve_settings
from seqlm.training.session import train_on_corpus

SETS = ["train.cpu_threads=1", "train.steps=6", "train.eval_every=3", "model.context=32"]


@pytest.fixture(scope="module")
def pooled(song_corpus, tmp_path_factory):
    """A tiny run on the song corpus, the pool to start from."""
    run = tmp_path_factory.mktemp("pool") / "run"
    train_on_corpus(song_corpus.path, run, resolve_settings(None, SETS, "tiny"))
    return run


def test_fine_tune_on_a_conditioned_corpus_keeps_known_rows_and_reports_new_ones(
    song_corpus, pooled, tmp_path
):
    conditioned = condition_corpus(song_corpus, tmp_path / "cond", ["group"])
    out = tmp_path / "tuned"
    settings = resolve_settings(None, ["train.cpu_threads=1", "train.steps=1"], None)
    settings.train.lr = 1e-12  # one step that changes nothing measurable
    train_on_corpus(conditioned.path, out, settings, init=pooled)
    config = json.loads((out / "config.json").read_text())
    report = config["init"]
    assert report["new_tokens"] == len(conditioned.vocabulary.condition_ids)
    assert report["new_token_kinds"] == {"condition": report["new_tokens"]}
    assert report["shared_tokens"] == song_corpus.vocab_size
    pool_config = json.loads((pooled / "config.json").read_text())
    for key in ("n_layer", "n_embd", "n_head", "block_size"):
        assert config["model"][key] == pool_config["model"][key]
    before = load_weights(pooled / "best" / WEIGHTS_FILE)["token_embedding.weight"]
    after = load_weights(out / WEIGHTS_FILE)["token_embedding.weight"]
    n = song_corpus.vocab_size
    torch.testing.assert_close(after[:n], before, atol=1e-6, rtol=0)
    mean = before.mean(dim=0)
    for row in conditioned.vocabulary.condition_ids.tolist():
        torch.testing.assert_close(after[row], mean, atol=1e-6, rtol=0)


def test_a_shape_change_or_a_foreign_vocabulary_is_refused(song_corpus, pooled, tmp_path):
    settings = resolve_settings(None, ["train.steps=1", "model.width=64"], None)
    with pytest.raises(ConfigError, match="keeps .*model shape"):
        train_on_corpus(song_corpus.path, tmp_path / "a", settings, init=pooled)
    tokenizer = json.loads((pooled / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    foreign = {f"x{i}" if i > 4 else t: i for t, i in vocab.items()}
    tokenizer["model"]["vocab"] = foreign
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", WEIGHTS_FILE):
        (other / name).write_bytes((pooled / name).read_bytes())
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ConfigError, match="shares 5 of"):
        train_on_corpus(song_corpus.path, tmp_path / "b", resolve_settings(None, SETS), init=other)


def test_fine_tuning_with_the_recipe_keeps_the_pools_dropout_unless_set(
    song_corpus, pooled, tmp_path
):
    pool_dropout = json.loads((pooled / "config.json").read_text())["model"]["dropout"]
    base = ["train.cpu_threads=1", "train.steps=1"]
    kept = tmp_path / "kept"
    settings = resolve_settings(None, base, None, budget="2ktok", recipe=True)
    train_on_corpus(song_corpus.path, kept, settings, init=pooled)
    config = json.loads((kept / "config.json").read_text())
    assert config["model"]["dropout"] == pool_dropout == config["recipe"]["model"]["dropout"]
    assert "--init" in config["recipe"]["reasons"]["dropout"]
    chosen = tmp_path / "chosen"
    settings = resolve_settings(
        None, [*base, "model.dropout=0.3"], None, budget="2ktok", recipe=True
    )
    train_on_corpus(song_corpus.path, chosen, settings, init=pooled)
    assert json.loads((chosen / "config.json").read_text())["model"]["dropout"] == 0.3


@pytest.mark.parametrize("positions", ["rotary", "alibi"])
def test_a_rotary_run_may_change_its_block_size_a_learned_one_may_not(
    song_corpus, pooled, tmp_path, positions
):
    """No weight of a rotary or ALiBi GPT depends on the block size: `--init` at a longer
    context is the same model (same weights, same logits on a short row) on longer rows.
    Learned positions have a weight row per position: refused, saying why."""
    from seqlm.evaluation.model_scorer import load_run_model

    rotary = tmp_path / "rotary"
    sets = [*SETS, f"model.positions={positions}"]
    train_on_corpus(song_corpus.path, rotary, resolve_settings(None, sets, "tiny"))
    wider = ["train.cpu_threads=1", "train.steps=1", "model.context=64"]
    settings = resolve_settings(None, wider, None)
    settings.train.lr = 1e-12  # one step that changes nothing measurable
    out = tmp_path / "wide"
    train_on_corpus(song_corpus.path, out, settings, init=rotary)
    old = json.loads((rotary / "config.json").read_text())["model"]
    new = json.loads((out / "config.json").read_text())["model"]
    assert (old["block_size"], new["block_size"]) == (32, 64)
    assert {k: v for k, v in new.items() if k != "block_size"} == {
        k: v for k, v in old.items() if k != "block_size"
    }
    before, after = load_weights(rotary / "best" / WEIGHTS_FILE), load_weights(out / WEIGHTS_FILE)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, atol=1e-6, rtol=0)
    short, wide = load_run_model(rotary, "best").model, load_run_model(out).model
    assert wide.config.block_size == 64
    row = torch.tensor(song_corpus.sequence(0)[:32].astype("int64"))[None]
    with torch.no_grad():
        torch.testing.assert_close(wide(row).logits, short(row).logits, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="learned positions have one weight row per position"):
        train_on_corpus(song_corpus.path, tmp_path / "refused", settings, init=pooled)


def test_seqlm_train_init_refuses_a_learned_runs_block_size_with_exit_2(
    song_corpus, pooled, tmp_path
):
    from helpers.cli_helpers import run_seqlm

    argv = ["train", str(song_corpus.path), "--out", str(tmp_path / "r"), "--init", str(pooled)]
    result = run_seqlm(*argv, "--set", "model.context=64", "--set", "train.cpu_threads=1")
    assert result.returncode == 2, result.stderr
    assert "only a rotary or alibi run's block size may change" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
