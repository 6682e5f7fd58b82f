"""Fixtures for the birdsong adapter tests: the bundled format examples, and a runner
that feeds arbitrary bytes to an adapter (for the Hypothesis tests)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seqlm.errors import SeqlmError

BIRDSONG_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "birdsong"


@pytest.fixture(scope="session")
def examples() -> Path:
    """The real example files, copied into tests/fixtures/birdsong."""
    return BIRDSONG_FIXTURES


def _run_on_bytes(read: Callable[..., Any], options: Any, data: bytes, name: str) -> Any:
    """Write `data` to a file called `name` and read it; only SeqlmError may escape."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return read([path], options)
        except SeqlmError:
            return None


@pytest.fixture(scope="session")
def run_on_bytes() -> Callable[..., Any]:
    # Session-scoped so Hypothesis' @given tests may use it (no per-example fixture reset).
    return _run_on_bytes
