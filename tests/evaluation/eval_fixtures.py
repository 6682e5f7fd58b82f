"""Helpers for the evaluation tests of trained models: one torch thread, tiny models.

`from eval_fixtures import single_torch_thread` turns the autouse fixture on in a test
module. Tiny tensors gain nothing from a second thread, and on a busy 2-core box OpenMP
threads waiting on each other made a tiny LSTM step take ~1 s instead of ~0.03 s.
(A helper module, not a conftest.py, so the root conftest keeps its name.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from seqlm.model import GPT, GPTConfig


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """A random GPT in eval mode. `init_std=0.5` makes its distributions peaked enough
    that greedy decoding wanders instead of repeating one token."""
    torch.manual_seed(seed)
    values = {
        "vocab_size": 30,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 16,
        "init_std": 0.5,
    }
    values.update(overrides)
    return GPT(GPTConfig(**values)).eval()
