"""What the CLI tests share: `from cli_helpers import run, BIRDSONG_FIXTURES, ingest_bird1`."""

from __future__ import annotations

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
