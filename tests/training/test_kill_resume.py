"""Kill `seqlm train` with SIGKILL at a random step, resume, and get the same final
weights, byte for byte, as a run that was never interrupted (CPU, same seed)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqlm.training.checkpoint import RunFolder

STEPS = 60
SETTINGS = [
    "--preset", "tiny",
    "--set", "model.context=32",
    "--set", "model.dropout=0.1",  # randomness inside steps must replay too
    "--set", f"train.steps={STEPS}",
    "--set", "train.batch_size=4",
    "--set", "train.checkpoint_every=5",
    "--set", "train.eval_every=10",
    "--set", "train.log_every=5",
    "--set", "train.warmup_steps=10",
]  # fmt: skip


def train_command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seqlm.train", str(corpus), "--out", str(out), *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def latest_step(run: RunFolder) -> int:
    folders = run.list_checkpoints()
    return int(folders[-1].name[5:]) if folders else -1


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
@pytest.mark.parametrize("averaging", [(), ("--set", "train.ema_decay=0.9")])
def test_sigkill_then_resume_matches_an_uninterrupted_run(song_corpus, tmp_path, averaging):
    # With weight averaging the saved model is the average, which must resume too.
    settings = [*SETTINGS, *averaging]
    corpus = Path(song_corpus.path)
    straight = tmp_path / "straight"
    subprocess.run(
        train_command(corpus, straight, *settings),
        check=True,
        env=environment(),
        capture_output=True,
    )

    seed = random.randrange(1_000_000)
    kill_after = random.Random(seed).randrange(5, STEPS - 20)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(corpus, killed, *settings),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = RunFolder(killed)
    deadline = time.monotonic() + 120
    try:
        while latest_step(run) < kill_after:
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        returncode = process.wait()
    assert returncode == -signal.SIGKILL
    interrupted_at = latest_step(run)
    assert kill_after <= interrupted_at < STEPS, f"seed {seed}"

    subprocess.run(
        train_command(corpus, killed, "--resume"),
        check=True,
        env=environment(),
        capture_output=True,
    )
    for name in ("model.safetensors", "best/model.safetensors"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), (
            f"{name}: seed {seed}, killed after checkpoint {interrupted_at}"
        )
    assert RunFolder(killed).latest_checkpoint().step == STEPS
    # The resumed run's log has one record per step, with no duplicates from replay.
    from seqlm.training.metrics_log import read_metrics

    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(5, STEPS + 1, 5))
