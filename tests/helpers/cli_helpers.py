"""What the CLI tests share: `from cli_helpers import run, run_seqlm, BIRDSONG_FIXTURES, ingest_bird1`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from seqlm.cli.app import main

BIRDSONG_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "birdsong"


def run(argv: list[str]) -> int:
    """`seqlm ARGV` in this process; its exit code (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def ingest_bird1(out: Path) -> Path:
    """The small bird1 fixture (crowsetta generic-seq CSV) ingested into `out`."""
    source = BIRDSONG_FIXTURES / "bird1.csv"
    assert run(["ingest", "crowsetta-generic-seq", str(source), "--out", str(out)]) == 0
    return out


def run_seqlm(*args: str) -> subprocess.CompletedProcess:
    """`seqlm ARGS` in a child process, as a user runs it (stdout, stderr, exit code)."""
    env = {**os.environ, "COLUMNS": "100"}
    command = [sys.executable, "-m", "seqlm", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)
