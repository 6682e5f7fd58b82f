"""The stopping rule in words: what ends a run, said at its start and kept in config.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from seqlm.training.config import TrainConfig
from seqlm.training.stopping import StoppingRuleNotice, announce_stopping_rule, stopping_rule


def test_default_budget_is_300_steps():
    rule = stopping_rule(TrainConfig())
    assert rule.startswith("training stops after 300 optimizer steps")
    assert "replaces" not in rule


def test_a_budget_in_minutes_says_it_replaces_the_default_steps():
    rule = stopping_rule(TrainConfig(max_minutes=14, early_stopping=5, eval_every=100))
    assert rule.startswith("training stops after 14 minutes of wall time")
    assert "replaces the default 300 steps" in rule
    assert "after 5 evaluations (every 100 steps) without a lower tuning loss" in rule


def test_several_limits_and_no_tuning_split():
    rule = stopping_rule(TrainConfig(max_steps=50, max_tokens=10_000), has_tuning_split=False)
    assert rule.startswith("training stops after the first of 50 optimizer steps, 10,000")
    assert rule.endswith("no tuning split, so no evaluation, early stopping or best/")


def test_early_stopping_off_is_not_mentioned():
    assert "evaluation" not in stopping_rule(TrainConfig(max_steps=10, early_stopping=0))


def test_announce_emits_a_notice():
    with pytest.warns(StoppingRuleNotice, match="training stops after 7 optimizer steps"):
        announce_stopping_rule(TrainConfig(max_steps=7, early_stopping=0))


def test_seqlm_train_prints_the_rule_and_records_it(song_corpus, tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "seqlm", "train", str(song_corpus.path), "--out", str(run),
         "--preset", "micro", "--set", "train.minutes=0.05", "--set", "train.cpu_threads=1",
         "--set", "model.layers=1", "--set", "model.width=32", "--set", "model.heads=2",
         "--set", "model.context=32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "note: training stops after 0.05 minutes of wall time" in result.stderr
    assert "replaces the default 300 steps" in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["stopping"].startswith("training stops after 0.05 minutes")
