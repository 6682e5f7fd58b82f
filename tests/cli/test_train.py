"""`seqlm train` and `seqlm runs show` from the command line, on a real (small)
Bengalese finch annotation file shipped with the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli_helpers import ingest_bird1, run

TINY = [
    "--preset", "tiny",
    "--set", "model.context=16",
    "--set", "train.steps=8",
    "--set", "train.batch=2",
    "--set", "train.eval_every=4",
    "--set", "train.log_every=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def finch_corpus(tmp_path_factory) -> Path:
    return ingest_bird1(tmp_path_factory.mktemp("cli_train") / "bird1")


def test_train_then_show(finch_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", str(finch_corpus), "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "run written" in printed and "tuning loss" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["n_layer"] == 2 and config["model"]["block_size"] == 16
    assert config["train"]["max_steps"] == 8 and config["train"]["batch_size"] == 2
    assert (out / "model.safetensors").exists() and (out / "best" / "model.safetensors").exists()

    assert run(["runs", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "finished" in shown and "eval_loss" in shown and "n_layer=2" in shown
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"

    # Resuming a finished run is allowed and changes nothing.
    before = (out / "model.safetensors").read_bytes()
    assert run(["train", str(finch_corpus), "--out", str(out), "--resume"]) == 0
    assert (out / "model.safetensors").read_bytes() == before


def test_config_file_with_model_and_train_tables(finch_corpus, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        '[model]\npreset = "tiny"\ncontext = 16\nlayers = 1\n\n'
        '[train]\nsteps = 3\nbatch = 2\ndecay = "linear"\n'
    )
    out = tmp_path / "run"
    assert run(["train", str(finch_corpus), "--out", str(out), "--config", str(config)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["n_layer"] == 1
    assert saved["train"]["decay"] == "linear"
    assert json.loads((out / "state.json").read_text())["step"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "model.layers=zero"], "must be an integer"),
        (["--set", "train.nonsense=1"], "unknown option"),
        (["--set", "model.context=0"], "block_size"),
        (["--preset", "gigantic"], "no model preset"),
    ],
)
def test_bad_settings_exit_2_with_one_line(finch_corpus, tmp_path, capsys, extra, message):
    assert run(["train", str(finch_corpus), "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_missing_corpus_and_resume_rules(finch_corpus, tmp_path, capsys):
    assert run(["train", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]) == 2
    assert "error:" in capsys.readouterr().err
    assert run(["train", str(finch_corpus), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert run(["runs", "show", str(tmp_path / "none")]) == 2


@pytest.mark.slow
def test_nproc_launches_torchrun(finch_corpus, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "seqlm", "train", str(finch_corpus), "--out", str(out), *TINY]
        + ["--nproc", "2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
