"""The multi-pair planted corpus (seqlm.datasets.planted_multi)."""

from __future__ import annotations

import numpy as np
import pytest

from seqlm.datasets.planted import ANSWERS, FILLER, _chain
from seqlm.datasets.planted_multi import (
    KEY_BASE,
    QUERY_BASE,
    VALUES,
    key_symbol,
    multi_pair_sequences,
    planted_targets,
    query_symbol,
)
from seqlm.errors import ConfigError


def _pairs_of(seq: str) -> dict[int, tuple[int, int, int]]:
    """label -> (key position, key value, query position)."""
    keys = {}
    queries = {}
    for i, c in enumerate(seq):
        code = ord(c)
        if KEY_BASE <= code < QUERY_BASE:
            keys[(code - KEY_BASE) // VALUES] = (i, (code - KEY_BASE) % VALUES)
        elif code >= QUERY_BASE:
            queries[code - QUERY_BASE] = i
    assert keys.keys() == queries.keys()
    return {j: (*keys[j], queries[j]) for j in keys}


@pytest.mark.parametrize(
    ("min_gap", "max_gap", "pairs"), [(5, 20, 8), (100, 1000, 16), (3990, 4010, 16)]
)
def test_each_query_is_its_own_keys_gap_away_and_answered_by_its_value(min_gap, max_gap, pairs):
    for seq in multi_pair_sequences(6, seed=2, min_gap=min_gap, max_gap=max_gap, pairs=pairs):
        found = _pairs_of(seq)
        assert sorted(found) == list(range(pairs))
        for key_at, value, query_at in found.values():
            # A query moves on by a place or two only where two pairs collide.
            assert min_gap <= query_at - key_at <= max_gap + 3 * pairs
            assert seq[query_at + 1] == ANSWERS[value]
        planted = {p for _, _, q in found.values() for p in (q, q + 1)}
        keys = {k for k, _, _ in found.values()}
        filler = [c for i, c in enumerate(seq) if i not in planted | keys]
        assert set(filler) <= set(FILLER)


def test_filler_takes_only_the_chains_successors_and_values_are_balanced():
    chain = _chain(0)
    sequences = multi_pair_sequences(40, seed=0, min_gap=30, max_gap=60, pairs=4)
    values = []
    for seq in sequences:
        values += [v for _, v, _ in _pairs_of(seq).values()]
        plain = [FILLER.index(c) for c in seq if c in FILLER]
        runs = [seq[i : i + 2] for i in range(len(seq) - 1)]
        for pair in runs:
            if pair[0] in FILLER and pair[1] in FILLER:
                assert chain[FILLER.index(pair[0]), FILLER.index(pair[1])] > 0
        assert plain
    counts = np.bincount(values, minlength=VALUES)
    assert counts.min() > 0.15 * len(values)


def test_a_seed_gives_one_corpus_and_another_seed_another():
    first = multi_pair_sequences(3, seed=7, pairs=4, min_gap=50, max_gap=80)
    assert first == multi_pair_sequences(3, seed=7, pairs=4, min_gap=50, max_gap=80)
    assert first != multi_pair_sequences(3, seed=8, pairs=4, min_gap=50, max_gap=80)


def test_planted_targets_are_the_query_positions():
    tokens = np.array([5, 9, 1, 9, 2, 3])
    assert planted_targets(tokens, {9}).tolist() == [1, 3]


def test_symbols_are_distinct_per_pair_and_value():
    symbols = {key_symbol(j, v) for j in range(32) for v in range(VALUES)}
    queries = {query_symbol(j) for j in range(32)}
    assert len(symbols) == 32 * VALUES and len(queries) == 32
    assert not symbols & queries and not (symbols | queries) & set(FILLER + ANSWERS + "YQ")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pairs": 0}, "pairs"),
        ({"pairs": 33}, "pairs"),
        ({"min_gap": 10, "max_gap": 5}, "min_gap"),
        ({"pairs": 8, "spread": 4}, "spread"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        multi_pair_sequences(1, **kwargs)
