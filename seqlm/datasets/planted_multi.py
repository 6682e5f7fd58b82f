"""A planted corpus with many long-range pairs per sequence (issue 19's 4,000-token gap).

`planted.long_range_sequences` holds one key per sequence, so at a 4,000-token gap one
target in 1,000 is planted and a training step of 8,192 tokens carries two answers that
only the far key decides. Here each sequence holds `pairs` independent key/query pairs,
each query `min_gap`..`max_gap` positions after its own key:

- pair j has a label (its own query symbol `Q_j`, one of `pairs`) and a key value v
  (one of 4). The key is one token standing for (j, v); the token after `Q_j` is the
  answer of v (one of `ANSWERS`). Nothing else in the sequence tells v: an n-gram, or
  a model whose attention does not reach the key, must guess among 4 (log 4 nats).
- the labels make the lookup content-addressed (the query finds the one key token of
  its label), as in the single-key corpus, where the key symbols appear nowhere else.
- the filler is the 12-symbol first-order chain of `planted` (its transition matrix for
  the same seed), sampled here with one uniform draw per symbol (faster; the sequences
  differ from `planted`'s for a seed, which this module does not try to reproduce).

Sequences are one character per token (birdsong-strings files via
`planted.write_strings`); keys are `KEY_BASE + 4 j + v`, queries `QUERY_BASE + j`
(printable Latin letters past ASCII, one per character).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from seqlm.datasets.planted import ANSWERS, FILLER, _chain
from seqlm.errors import ConfigError

KEY_BASE = 0x100  # 'Ā'...: key token of pair j, value v is chr(KEY_BASE + 4 * j + v)
QUERY_BASE = 0x180  # 'ƀ'...: query mark of pair j is chr(QUERY_BASE + j)
MAX_PAIRS = 32
VALUES = len(ANSWERS)


def key_symbol(pair: int, value: int) -> str:
    """The key token of `pair` holding `value`."""
    return chr(KEY_BASE + VALUES * pair + value)


def query_symbol(pair: int) -> str:
    """The query mark of `pair` (the next token is the answer of its key)."""
    return chr(QUERY_BASE + pair)


def query_symbols(pairs: int) -> list[str]:
    """Every query mark of a corpus with `pairs` pairs."""
    return [query_symbol(j) for j in range(pairs)]


def _filler(rng: np.random.Generator, cumulative: list[list[float]], length: int) -> list[str]:
    state = int(rng.integers(len(FILLER)))
    out = []
    for u in rng.random(length).tolist():
        row = cumulative[state]
        state = min(bisect_right(row, u), len(row) - 1)
        out.append(FILLER[state])
    return out


def _check(pairs: int, min_gap: int, max_gap: int, spread: int) -> None:
    if not 1 <= pairs <= MAX_PAIRS:
        raise ConfigError(f"pairs must be 1..{MAX_PAIRS}, not {pairs}")
    if not 1 <= min_gap <= max_gap:
        raise ConfigError(f"need 1 <= min_gap <= max_gap, got {min_gap}..{max_gap}")
    if spread < pairs:
        raise ConfigError(f"spread {spread} cannot hold {pairs} keys")


def multi_pair_sequences(
    count: int,
    seed: int = 0,
    min_gap: int = 3990,
    max_gap: int = 4010,
    pairs: int = 16,
    spread: int | None = None,
) -> list[str]:
    """`count` sequences, each with `pairs` key/query pairs `min_gap`..`max_gap` apart.

    The keys sit at distinct positions among the first `spread` filler positions
    (default `max_gap`), in random label order; each query `Q_j answer` is inserted
    `gap_j` positions after its key, so a sequence is about spread + max_gap + 3 x pairs
    tokens long. The distance from a key to its query mark is the drawn gap, or a few
    positions more where two pairs were drawn onto the same place.
    """
    spread = max_gap if spread is None else spread
    _check(pairs, min_gap, max_gap, spread)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(_chain(seed), axis=1).tolist()
    sequences = []
    for _ in range(count):
        key_at = np.sort(rng.choice(spread, size=pairs, replace=False))
        labels = rng.permutation(pairs)
        values = rng.integers(VALUES, size=pairs)
        gaps = rng.integers(min_gap, max_gap + 1, size=pairs)
        # Final position of every inserted token (keys first), then filler elsewhere.
        placed = {
            at: key_symbol(int(j), int(v))
            for at, j, v in zip(key_at.tolist(), labels, values, strict=True)
        }
        for at, j, v, gap in zip(key_at.tolist(), labels, values, gaps, strict=True):
            query_at = at + int(gap)
            while query_at in placed or query_at + 1 in placed:
                query_at += 1  # two pairs drawn onto one place: this query moves on
            placed[query_at] = query_symbol(int(j))
            placed[query_at + 1] = ANSWERS[int(v)]
        length = max(placed) + 1
        filler = iter(_filler(rng, cumulative, length - len(placed)))
        sequences.append("".join(placed.get(i) or next(filler) for i in range(length)))
    return sequences


def planted_targets(tokens: np.ndarray, query_ids: set[int]) -> np.ndarray:
    """Indices i whose next token tokens[i + 1] is a planted answer (tokens[i] a query)."""
    tokens = np.asarray(tokens)
    marks = np.isin(tokens[:-1], sorted(query_ids))
    return np.flatnonzero(marks)
