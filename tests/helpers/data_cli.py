"""What the data/artefact CLI tests share: run `seqlm` as a user does (a subprocess),
check one-line errors, and write small MEDS / CSV inputs.

`from data_cli import seqlm, assert_one_line_error, write_meds_rows`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from helpers.meds_data import MEDS_SCHEMA

# Characters of rich's progress bars (finished ━, pending ╺ ╸ and spaces with a count).
PROGRESS_MARKS = ("━", "╺", "╸", "-:--:--")


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def seqlm(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m seqlm ARGS` in a fresh process, one thread, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "seqlm", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


# Runs seqlm's entry point, then writes the process's peak resident memory (VmHWM, kB)
# to the file named by argv[1]. VmHWM belongs to the process image after exec, so unlike
# ru_maxrss it does not count the parent's memory copied at fork.
_PEAK_WRAPPER = """
import atexit, sys
peak_file = sys.argv.pop(1)
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            open(peak_file, "w").write(line.split()[1])
atexit.register(report)
from seqlm.cli.app import main
main()
"""


def seqlm_peak_memory(*args: str | Path, out: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`seqlm ARGS` in a fresh process and its peak resident memory in MiB (Linux)."""
    out.mkdir(parents=True, exist_ok=True)
    peak = out / "peak_kb"
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, str(peak), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    return result, int(peak.read_text()) / 1024


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one line on stderr, no traceback, and each needle in that line.

    Progress-bar lines (rich draws them on stderr) are not messages and are skipped, and
    so are `note:` lines said before the failure (the stopping rule a run will use).
    """
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip()
        and not any(mark in line for mark in PROGRESS_MARKS)
        and not line.startswith("note: ")
    ]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_meds_rows(root: Path, rows: Sequence[tuple], split: str = "train") -> Path:
    """A MEDS dataset with one shard `data/<split>/0.parquet` of (subject_id, time, code,
    numeric_value, text_value) rows; no codes.parquet (so no metadata warning)."""
    shard = root / "data" / split / "0.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(list(rows), schema=MEDS_SCHEMA, orient="row").write_parquet(shard)
    (root / "metadata").mkdir(exist_ok=True)
    (root / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "t"}))
    return root


def read_manifest(corpus: Path) -> dict:
    return json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
