"""Generated corpora with known structure, for the recipe sweep and for tests.

Written as birdsong-strings files (one character per symbol, `Y` opening each
sequence), so they go through the ordinary `seqlm ingest birdsong-strings` pipeline.

- `local_sequences`: a first-order Markov chain over 12 symbols, each symbol followed by
  one of three successors (probabilities 0.6 / 0.3 / 0.1). Only local structure: a
  bigram model is the truth, so a good n-gram is as good as any model can be.
- `long_range_sequences`: the same chain, but each sequence opens with a key (one of 4)
  and holds `queries` query marks `Q` placed `min_gap`..`max_gap` symbols after the key;
  the symbol after each `Q` is the key's answer. The answer is decided by one token 50 to
  500 positions back: an n-gram (and a model whose memory does not reach) must guess
  among 4 (log 4 = 1.386 nats), a model that reads the key predicts it exactly.

`decisive_mask` marks the targets whose previous symbol is `Q` (the planted ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILLER = "abcdefghijkl"
KEYS = "ABCD"
ANSWERS = "WXZV"  # answer of key i
QUERY = "Q"
BOUT_MARKER = "Y"


def _chain(seed: int) -> np.ndarray:
    """Transition matrix of the filler chain: three successors per symbol."""
    rng = np.random.default_rng(10_000 + seed)
    n = len(FILLER)
    matrix = np.zeros((n, n))
    for row in range(n):
        successors = rng.choice(n, size=3, replace=False)
        matrix[row, successors] = (0.6, 0.3, 0.1)
    return matrix


def _filler(rng: np.random.Generator, matrix: np.ndarray, length: int) -> list[str]:
    state = int(rng.integers(len(FILLER)))
    out = []
    for _ in range(length):
        state = int(rng.choice(len(FILLER), p=matrix[state]))
        out.append(FILLER[state])
    return out


def local_sequences(count: int, seed: int = 0, min_len: int = 40, max_len: int = 200) -> list[str]:
    """Sequences of the filler chain alone."""
    rng = np.random.default_rng(seed)
    matrix = _chain(seed)
    return [
        "".join(_filler(rng, matrix, int(rng.integers(min_len, max_len + 1)))) for _ in range(count)
    ]


def long_range_sequences(
    count: int, seed: int = 0, min_gap: int = 50, max_gap: int = 500, queries: int = 4
) -> list[str]:
    """Key first, then filler with `queries` `Q answer` pairs min_gap..max_gap after it."""
    rng = np.random.default_rng(seed)
    matrix = _chain(seed)
    sequences = []
    for _ in range(count):
        key = int(rng.integers(len(KEYS)))
        length = int(rng.integers(min_gap + queries, max_gap + 1))
        body = _filler(rng, matrix, length)
        positions = sorted(rng.choice(np.arange(min_gap, length), size=queries, replace=False))
        for offset, position in enumerate(positions):
            at = int(position) + 2 * offset  # earlier insertions shift later ones
            body[at:at] = [QUERY, ANSWERS[key]]
        sequences.append(KEYS[key] + "".join(body))
    return sequences


def write_strings(folder: str | Path, name: str, sequences: list[str]) -> Path:
    """One birdsong-strings file `folder/name` (no condition in the name)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(BOUT_MARKER + s for s in sequences), encoding="utf-8")
    return path


def decisive_mask(previous: np.ndarray, query_id: int) -> np.ndarray:
    """Targets whose previous token is the query mark: the planted long-range ones."""
    return np.asarray(previous) == query_id
