"""Shared fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test with a reason when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture
def birdsong_examples() -> Path:
    return shared_path("birdsong", "format-examples")


@pytest.fixture
def finch_lesions() -> Path:
    return shared_path("birdsong", "koparkar2024_mman_lesions")


@pytest.fixture
def mimic_demo() -> Path:
    return shared_path("clinical", "mimic-iv-demo-meds")
