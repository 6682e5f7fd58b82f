"""What the reliability tests share: running `seqlm` as a user does (a subprocess) and
checking that a failure is exactly one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from seqlm.cli.app import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BIRD1 = FIXTURES / "birdsong" / "bird1.csv"
MEDS_SHARD = FIXTURES / "meds" / "mimic_demo_3_subjects.parquet"


def seqlm(args: list[str], cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m seqlm ARGS` in a subprocess, one torch thread; text output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(kwargs.pop("env", {}))
    command = [sys.executable, "-m", "seqlm", *[str(a) for a in args]]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


def message_lines(stderr: str) -> list[str]:
    """stderr's lines other than one-line warnings and notes."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("warning:", "note:"))
    ]


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, stderr one `error:` line (holding each needle), no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = message_lines(result.stderr)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def in_process(args: list) -> subprocess.CompletedProcess:
    """`seqlm ARGS` through the same `main` in this process (no interpreter start-up,
    so cheap enough for Hypothesis and for the cases beyond the subprocess ones)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def manifest_counts(corpus: Path) -> dict:
    return json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))["counts"]
