"""Issue 14 class 10: training that diverges says so.

A non-finite loss stops training with exit 2 and one line naming the step; nothing is
saved after it (every checkpoint on disk is finite, `best/` never holds NaN); an
optional skip budget lets a run step over a few bad steps. Through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.cli_helpers import BIRDSONG_FIXTURES
from helpers.data_cli import assert_one_line_error, seqlm
from safetensors.torch import load_file

TINY = ["--set", "model.layers=1", "--set", "model.width=32", "--set", "model.heads=2",
        "--set", "model.context=32"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("divergence") / "corpus"
    result = seqlm("ingest", "crowsetta-generic-seq", BIRDSONG_FIXTURES / "bird1.csv", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _train(corpus: Path, run: Path, *sets: str):
    args = [a for s in sets for a in ("--set", s)]
    return seqlm("train", corpus, "--out", run, *TINY, *args)


def _all_weights_finite(run: Path) -> bool:
    files = list(run.rglob("model.safetensors"))
    assert files
    return all(torch.isfinite(t).all() for f in files for t in load_file(f).values())


def _final(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "final"][-1]


@pytest.mark.parametrize(
    "sets",
    [
        ("train.lr=1e12",),  # the example
        ("train.lr=1e12", "train.grad_clip=0"),  # no gradient norm to look at
        pytest.param(
            ("train.lr=1e30", "train.warmup_steps=0", "train.checkpoint_every=1"),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_divergence_exits_2_naming_the_step_and_saves_nothing_after(corpus, tmp_path, sets):
    run = tmp_path / "run"
    result = _train(corpus, run, "train.steps=30", "train.eval_every=5", *sets)
    line = assert_one_line_error(result, "training diverged at step", "train.lr")
    assert "Traceback" not in result.stdout
    assert _final(run)["stop_reason"] == "diverged"
    if (run / "best").exists():
        best = json.loads((run / "best" / "state.json").read_text())
        assert best["loss"] == best["loss"] and best["loss"] < 1e30  # not NaN or inf
    if any(run.rglob("model.safetensors")):
        assert _all_weights_finite(run)
        assert "the last checkpoint (finite) is step" in line
    else:
        assert "no checkpoint was written" in line


def test_skip_budget_counts_bad_steps_then_stops(corpus, tmp_path):
    run = tmp_path / "run"
    result = _train(corpus, run, "train.steps=30", "train.lr=1e12", "train.nonfinite_skips=3")
    assert_one_line_error(result, "4 non-finite step(s)", "nonfinite_skips = 3")


@pytest.mark.slow  # the trainer tests cover healthy runs; this is the CLI's view
def test_a_healthy_run_is_untouched_by_the_guard(corpus, tmp_path):
    run = tmp_path / "run"
    result = _train(corpus, run, "train.steps=6", "train.eval_every=3")
    assert result.returncode == 0, result.stderr
    assert _final(run)["stop_reason"] == "budget" and _all_weights_finite(run)


def test_negative_skip_budget_is_a_one_line_error(corpus, tmp_path):
    result = _train(corpus, tmp_path / "run", "train.nonfinite_skips=-1")
    assert_one_line_error(result, "nonfinite_skips")
