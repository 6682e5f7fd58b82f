"""train_on_corpus: a corpus folder in, a complete run folder out; resume rules."""

from __future__ import annotations

import json

import pytest

from seqlm.errors import ConfigError, CorpusError
from seqlm.training.config import resolve_settings
from seqlm.training.metrics_log import read_metrics
from seqlm.training.runs import load_trained_model, plot_loss_curves, summarize_run
from seqlm.training.session import train_on_corpus

SETS = [
    "model.context=32",
    "train.steps=12",
    "train.batch_size=4",
    "train.eval_every=6",
    "train.checkpoint_every=6",
    "train.log_every=3",
]


@pytest.fixture(scope="module")
def finished_run(song_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("session") / "run"
    result = train_on_corpus(song_corpus.path, out, resolve_settings(sets=SETS, preset="tiny"))
    return out, result


def test_a_complete_run_folder(song_corpus, finished_run):
    out, result = finished_run
    assert result.step == 12
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "tokenizer.json",
        "metrics.jsonl",
        "model.safetensors",
        "optimizer.pt",
        "state.json",
        "checkpoints",
        "best",
    } <= names
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "tiny"
    assert config["model"]["block_size"] == 32
    assert config["model"]["vocab_size"] == song_corpus.vocab_size
    assert config["train"]["max_steps"] == 12
    assert config["corpus"]["tokens"] == len(song_corpus.tokens)
    assert config["world_size"] == 1
    assert (out / "tokenizer.json").read_bytes() == (
        song_corpus.path / "tokenizer.json"
    ).read_bytes()
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 12 and state["tokens"] == result.tokens
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert set(state["data_position"]) == {"epoch", "row"}


def test_summary_plot_and_trained_model(song_corpus, finished_run, tmp_path):
    out, result = finished_run
    summary = summarize_run(out)
    assert summary.finished and summary.step == 12
    assert summary.final["eval_loss"] == pytest.approx(result.eval_loss)
    assert [s for s, _ in summary.train_curve] == [3, 6, 9, 12]
    assert [s for s, _ in summary.eval_curve] == [6, 12]
    assert summary.checkpoints == [6, 12]
    png = plot_loss_curves(summary, tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_trained_model(out)
    assert not model.training
    best = load_trained_model(out, which="best")
    assert best.config.block_size == 32


def test_resume_of_a_finished_run_changes_nothing(song_corpus, finished_run):
    out, _ = finished_run
    before = (out / "model.safetensors").read_bytes()
    result = train_on_corpus(song_corpus.path, out, resume=True)
    assert result.step == 12
    assert (out / "model.safetensors").read_bytes() == before
    kinds = [r["kind"] for r in read_metrics(out / "metrics.jsonl")]
    assert kinds.count("final") == 1 and kinds[-1] == "final"


def test_run_folder_rules(song_corpus, finished_run, tmp_path):
    out, _ = finished_run
    with pytest.raises(ConfigError, match="--resume"):
        train_on_corpus(song_corpus.path, out, resolve_settings(sets=SETS, preset="tiny"))
    with pytest.raises(ConfigError, match="takes its settings from the run folder"):
        train_on_corpus(song_corpus.path, out, resolve_settings(sets=SETS), resume=True)
    with pytest.raises(CorpusError, match="not a run folder"):
        train_on_corpus(song_corpus.path, tmp_path / "never-started", resume=True)
    with pytest.raises(ConfigError, match="no model preset"):
        train_on_corpus(song_corpus.path, tmp_path / "x", resolve_settings(preset="huge"))
    with pytest.raises(ConfigError, match="unknown option.*model.depth"):
        train_on_corpus(song_corpus.path, tmp_path / "y", resolve_settings(sets=["model.depth=3"]))


def test_resume_on_another_corpus_is_refused(other_song_corpus, finished_run):
    out, _ = finished_run
    with pytest.raises(CorpusError, match="not the corpus this run was trained on"):
        train_on_corpus(other_song_corpus.path, out, resume=True)


def test_shuffling_simultaneous_events_needs_times(song_corpus, tmp_path):
    # A birdsong-strings corpus has no times.bin: refused in words, before training.
    settings = resolve_settings(sets=[*SETS, "train.shuffle_simultaneous=true"], preset="tiny")
    with pytest.raises(ConfigError, match="times.bin"):
        train_on_corpus(song_corpus.path, tmp_path / "run", settings)
    assert not (tmp_path / "run" / "model.safetensors").exists()
