"""Shared fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_data import REPO_ROOT, SHARED_DATA, shared_path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
__all__ = ["FIXTURES", "REPO_ROOT", "SHARED_DATA", "shared_path"]


@pytest.fixture
def birdsong_examples() -> Path:
    return shared_path("birdsong", "format-examples")


@pytest.fixture
def finch_lesions() -> Path:
    return shared_path("birdsong", "koparkar2024_mman_lesions")


@pytest.fixture
def mimic_demo() -> Path:
    return shared_path("clinical", "mimic-iv-demo-meds")
