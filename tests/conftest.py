"""The one root of the test suite: where the real data lives (skips when it is absent)
and torch on one thread for every test. Shared test code is the `tests/helpers` package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.shared_data import REPO_ROOT, SHARED_DATA, shared_path

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


@pytest.fixture(autouse=True, scope="session")
def torch_threads_for_fixtures() -> Iterator[None]:
    """One intra-op thread before any module or session fixture trains or scores a model."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread in every test, restored after it (a test may change it).

    Test tensors are tiny, so a second thread buys nothing, and on a busy 2-core CI box
    OpenMP threads waiting on each other made a 40-step tiny training run take ~30 s
    instead of ~1.5 s. Subprocess runs set their own (`train.cpu_threads=1` where a test
    compares them with an in-process run).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
