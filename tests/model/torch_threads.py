"""Model tests run torch on one thread: `from torch_threads import single_torch_thread`.

Their tensors are tiny, so a second thread buys nothing, and on a shared or busy CI
box OpenMP threads waiting on each other made a 40-step tiny training run take ~30 s
instead of ~1.5 s. The previous setting is restored after each test. (A fixture module
rather than a tests/model/conftest.py: a second module named `conftest` would shadow
the root one that other tests import `shared_path` from.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
