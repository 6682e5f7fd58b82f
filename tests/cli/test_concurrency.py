"""Two writers into one output folder at once: exactly one succeeds, the other exits 2
naming the lock holder, and what survives is complete and equal to a solo run.

To make the overlap certain rather than a matter of timing, the first writer is paused
(SIGSTOP) as soon as it holds the lock, the second runs to its end, then the first is
resumed. A plain simultaneous start is checked too: exactly one of two wins.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers.reliability_helpers import BIRD1, assert_one_line_error, in_process, seqlm

TRAIN = [
    "--preset", "tiny",
    "--set", "model.context=16",
    "--set", "train.steps=12",
    "--set", "train.batch=2",
    "--set", "train.eval_every=6",
    "--set", "train.checkpoint_every=6",
    # One thread in the child as in this process: equal weights need equal reduction order.
    "--set", "train.cpu_threads=1",
]  # fmt: skip
CORPUS_FILES = ("tokens.bin", "times.bin", "index.parquet", "tokenizer.json", "scheme.json")


def _start(args: list) -> subprocess.Popen:
    command = [sys.executable, "-m", "seqlm", *[str(a) for a in args]]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(child: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = child.communicate(timeout=600)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _wait_for_lock(out: Path, child: subprocess.Popen) -> None:
    """Until `child` holds the lock of `out` (its pid is in the lock file)."""
    lock = out.parent / f".{out.name}.seqlm-lock"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert child.poll() is None, _finish(child).stderr
        try:
            if json.loads(lock.read_text()).get("pid") == child.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"{child.args} never took the lock of {out}")


def _contend(first: list, second: list, out: Path) -> tuple:
    """Run `second` while `first` holds the lock of `out` (paused there); returns the
    first's pid and both results."""
    holder = _start(first)
    try:
        _wait_for_lock(out, holder)
        holder.send_signal(signal.SIGSTOP)
        loser = seqlm(second)
    finally:
        holder.send_signal(signal.SIGCONT)
    return holder.pid, _finish(holder), loser


def _same_corpus(a: Path, b: Path) -> None:
    for name in CORPUS_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifest_a = json.loads((a / "manifest.json").read_text())
    manifest_b = json.loads((b / "manifest.json").read_text())
    for manifest in (manifest_a, manifest_b):  # when and how fast, not what was written
        manifest.pop("created"), manifest.pop("seconds_per_stage", None)
        manifest.pop("cpu_seconds_per_stage", None)
    for manifest in (manifest_a, manifest_b):  # when each file was written differs, not what
        for record in manifest.get("files", {}).values():
            record.pop("mtime_ns")
    assert manifest_a == manifest_b


def test_two_ingests_into_one_folder(tmp_path):
    out = tmp_path / "corpus"
    ingest = ["ingest", "crowsetta-generic-seq", BIRD1, "--out", out]
    pid, winner, loser = _contend(ingest, ingest, out)
    assert winner.returncode == 0, winner.stderr
    assert_one_line_error(loser, f"pid {pid} on {socket.gethostname()}", "seqlm ingest")
    solo = tmp_path / "solo"
    assert in_process(["ingest", "crowsetta-generic-seq", BIRD1, "--out", solo]).returncode == 0
    _same_corpus(out, solo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "solo"]


def test_two_trainings_into_one_folder(tmp_path):
    corpus = tmp_path / "corpus"
    assert in_process(["ingest", "crowsetta-generic-seq", BIRD1, "--out", corpus]).returncode == 0
    out = tmp_path / "run"
    train = ["train", corpus, "--out", out, *TRAIN]
    pid, winner, loser = _contend(train, train, out)
    assert winner.returncode == 0, winner.stderr
    assert_one_line_error(loser, f"pid {pid} on {socket.gethostname()}", "seqlm train")
    solo = tmp_path / "solo"
    assert in_process(["train", corpus, "--out", solo, *TRAIN]).returncode == 0  # one thread too
    for name in ("model.safetensors", "best/model.safetensors"):
        assert (out / name).read_bytes() == (solo / name).read_bytes(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(steps) and records[-1]["kind"] == "final"  # not interleaved


def test_two_ingests_started_together(tmp_path):
    out = tmp_path / "corpus"
    ingest = ["ingest", "crowsetta-generic-seq", BIRD1, "--out", out]
    results = [_finish(child) for child in [_start(ingest), _start(ingest)]]
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 2)
    # Whether it met the lock or the finished corpus depends on timing; both are refusals.
    line = assert_one_line_error(loser)
    assert "being written by" in line or "not empty" in line
