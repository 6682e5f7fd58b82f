"""Two processes under torchrun (gloo on CPU) take the same steps as one process with
the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlm.training.checkpoint import load_weights

STEPS = 5
# No biases: the key projection's bias has a gradient that is zero in exact arithmetic,
# and Adam turns its rounding noise into a full-size step that differs between runs.
SETTINGS = [
    "--preset", "tiny",
    "--set", "model.context=32",
    "--set", "model.bias=false",
    "--set", f"train.steps={STEPS}",
    "--set", "train.eval_every=5",
    "--set", "train.eval_batches=2",
]  # fmt: skip


def run(command: list[str]) -> None:
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]


def train_one_process(corpus: Path, out: Path, batch_size: int) -> None:
    run(
        [sys.executable, "-m", "seqlm.train", str(corpus), "--out", str(out), *SETTINGS]
        + ["--set", f"train.batch_size={batch_size}"]
    )


def train_torchrun(corpus: Path, out: Path, batch_size: int, *extra: str) -> None:
    run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node=2", "-m", "seqlm.train", str(corpus), "--out", str(out),
            *SETTINGS, "--set", f"train.batch_size={batch_size}", *extra,
        ]
    )  # fmt: skip


def assert_same_parameters(a: Path, b: Path) -> None:
    first, second = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert set(first) == set(second)
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def one_process_run(song_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    train_one_process(Path(song_corpus.path), out, batch_size=4)
    return out


def test_ddp_two_processes_match_one_process(song_corpus, one_process_run, tmp_path):
    out = tmp_path / "ddp"
    train_torchrun(Path(song_corpus.path), out, batch_size=2)
    assert_same_parameters(out, one_process_run)
    # Only rank 0 wrote: one record per log step, one config, world size recorded.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "final"' in line for line in lines) == 1
    import json

    assert json.loads((out / "config.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_fsdp2_two_processes_match_one_process(song_corpus, one_process_run, tmp_path):
    out = tmp_path / "fsdp"
    train_torchrun(Path(song_corpus.path), out, 2, "--set", "train.parallel=fsdp")
    assert_same_parameters(out, one_process_run)


AVERAGING = ["--set", "train.ema_decay=0.5"]


@pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_weight_averaging_with_two_processes_matches_one_process(song_corpus, tmp_path, parallel):
    # The average is kept on each process's own (possibly sharded) parameters and
    # gathered for the checkpoint: the saved model and raw weights match one process.
    corpus = Path(song_corpus.path)
    one = tmp_path / "one"
    run(
        [sys.executable, "-m", "seqlm.train", str(corpus), "--out", str(one), *SETTINGS]
        + ["--set", "train.batch_size=4", *AVERAGING]
    )
    two = tmp_path / parallel
    train_torchrun(corpus, two, 2, "--set", f"train.parallel={parallel}", *AVERAGING)
    assert_same_parameters(two, one)
    step = f"checkpoints/step_{STEPS:07d}"
    first = load_weights(one / step / "model_raw.safetensors")
    second = load_weights(two / step / "model_raw.safetensors")
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=1e-6)
        assert not torch.equal(first[name], load_weights(one / "model.safetensors")[name])
