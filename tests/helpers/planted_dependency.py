"""A synthetic corpus with a planted long-range dependency, and a tiny GPT trained on it.

Each sequence is `[BOS]`, then `DISTANCE` random symbols, then copies: token t equals
token t - DISTANCE. So a target is predictable exactly when the token DISTANCE places
back is in its context: the loss must fall when a window w reaches DISTANCE.

The model trains on random crops (as the trainer cuts long sequences), so copying does
not depend on absolute position and a truncated window is read the way it was trained.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from seqlm.model import GPT, GPTConfig

DISTANCE = 5
SYMBOLS = 6
FIRST_SYMBOL = 5  # after the special ids
LENGTH = 30  # symbols per sequence
VOCAB_SIZE = FIRST_SYMBOL + SYMBOLS


def random_sequences(lengths: list[int], seed: int = 0, vocab_size: int = 12) -> list[np.ndarray]:
    """[BOS] and then random ids from 3 (never [PAD] or [BOS]), one sequence per length."""
    rng = np.random.default_rng(seed)
    return [np.concatenate([[1], rng.integers(3, vocab_size, size=n - 1)]) for n in lengths]


def planted_sequences(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(count):
        symbols = rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + SYMBOLS, size=LENGTH)
        for t in range(DISTANCE, LENGTH):
            symbols[t] = symbols[t - DISTANCE]
        sequences.append(np.concatenate([[1], symbols, [2]]).astype(np.int64))
    return sequences


@functools.cache
def trained_planted_model() -> GPT:
    """The default planted model, trained once per test session on one thread (the
    span, head and CLI tests share it; none of them changes its weights)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_planted_model()
    finally:
        torch.set_num_threads(previous)


def train_planted_model(
    steps: int = 160, seed: int = 0, block_size: int = 24, **overrides: object
) -> GPT:
    """A 2-layer GPT trained on crops of `planted_sequences` (AdamW, batch 16)."""
    torch.manual_seed(seed)
    values = {
        "vocab_size": VOCAB_SIZE,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": block_size,
        "positions": "rotary",
    }
    values.update(overrides)
    model = GPT(GPTConfig(**values))
    data = np.stack(planted_sequences(300, seed=seed + 1))
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        rows = rng.integers(0, data.shape[0], size=16)
        starts = rng.integers(0, data.shape[1] - block_size, size=16)
        columns = starts[:, None] + np.arange(block_size + 1)
        batch = torch.as_tensor(data[rows[:, None], columns])
        loss = model(batch[:, :-1], batch[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
