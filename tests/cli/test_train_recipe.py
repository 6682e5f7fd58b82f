"""`seqlm train` with no shape (the recipe), `--budget`, `--init`, and `seqlm corpus
condition`, as a user types them (a subprocess for exit codes and messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli_helpers import ingest_bird1, run


@pytest.fixture(scope="module")
def finch_corpus(tmp_path_factory) -> Path:
    return ingest_bird1(tmp_path_factory.mktemp("cli_recipe") / "bird1")


def _seqlm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "seqlm", *args], capture_output=True, text=True, env=env
    )


def test_no_shape_given_uses_the_recipe_and_says_why(finch_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", str(finch_corpus), "--out", str(out), "--budget", "4ktok"]
    assert run([*argv, "--set", "train.cpu_threads=1"]) == 0
    printed = capsys.readouterr().out
    assert "recipe (4,000 tokens)" in printed and "recipe.json" in printed
    recipe = json.loads((out / "recipe.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "recipe" and config["train"]["max_tokens"] == 4000
    assert config["model"]["n_embd"] == recipe["model"]["n_embd"]
    assert recipe["corpus"]["train_tokens"] > 0 and recipe["reasons"]["dropout"]


def test_a_bad_budget_is_one_line_and_exit_2(finch_corpus, tmp_path):
    result = _seqlm("train", str(finch_corpus), "--out", str(tmp_path / "r"), "--budget", "soon")
    assert result.returncode == 2
    assert "--budget 'soon' not understood" in result.stderr
    assert "Traceback" not in result.stderr


def test_condition_then_fine_tune_from_the_unconditioned_run(finch_corpus, tmp_path, capsys):
    pool = tmp_path / "pool"
    tiny = ["--preset", "tiny", "--set", "train.steps=4", "--set", "model.context=16"]
    assert run(["train", str(finch_corpus), "--out", str(pool), *tiny]) == 0
    conditioned = tmp_path / "cond"
    argv = ["corpus", "condition", str(finch_corpus), "--on", "group", "--out", str(conditioned)]
    assert run([*argv, "--min-sequences", "1"]) == 0
    assert "conditioning tokens on group" in capsys.readouterr().out
    tuned = tmp_path / "tuned"
    argv = ["train", str(conditioned), "--out", str(tuned), "--init", str(pool)]
    assert run([*argv, "--set", "train.steps=2"]) == 0
    printed = capsys.readouterr().out
    assert "initialised from" in printed and "new tokens (condition" in printed
    refused = _seqlm("corpus", "condition", str(finch_corpus), "--on", "nope", "--out", "x")
    assert refused.returncode == 2 and "cannot condition on 'nope'" in refused.stderr
