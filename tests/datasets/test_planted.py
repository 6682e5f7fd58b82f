"""The generated corpora with planted structure (seqlm.datasets.planted)."""

from __future__ import annotations

import numpy as np
import pytest

from seqlm.datasets.planted import (
    ANSWERS,
    BOUT_MARKER,
    FILLER,
    KEYS,
    QUERY,
    _chain,
    decisive_mask,
    local_sequences,
    long_range_sequences,
    write_strings,
)


@pytest.mark.parametrize(("min_gap", "max_gap"), [(10, 50), (50, 300), (3990, 4010)])
def test_every_query_sits_min_to_max_gap_after_the_key_and_is_answered_by_it(min_gap, max_gap):
    queries = 4
    sequences = long_range_sequences(8, seed=1, min_gap=min_gap, max_gap=max_gap)
    for seq in sequences:
        key = KEYS.index(seq[0])
        at = [i for i, c in enumerate(seq) if c == QUERY]
        assert len(at) == queries
        # Each earlier `Q answer` pair shifts the later queries by two.
        assert all(min_gap < i <= max_gap + 2 * queries for i in at)
        assert all(seq[i + 1] == ANSWERS[key] for i in at)
        filler = seq[1:].replace(QUERY + ANSWERS[key], "")
        assert set(filler) <= set(FILLER)


def test_local_sequences_only_take_the_chains_successors():
    chain = _chain(0)
    for seq in local_sequences(20, seed=0, min_len=40, max_len=60):
        assert 40 <= len(seq) <= 60
        states = [FILLER.index(c) for c in seq]
        assert all(chain[a, b] > 0 for a, b in zip(states, states[1:], strict=False))


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert long_range_sequences(5, seed=3) == long_range_sequences(5, seed=3)
    assert long_range_sequences(5, seed=3) != long_range_sequences(5, seed=4)


def test_write_strings_opens_every_sequence_with_the_bout_marker(tmp_path):
    sequences = ["Aabc", "Bcd"]
    path = write_strings(tmp_path / "raw", "synth", sequences)
    text = path.read_text(encoding="utf-8")
    assert text == f"{BOUT_MARKER}Aabc{BOUT_MARKER}Bcd"


def test_decisive_mask_marks_targets_after_the_query():
    previous = np.array([5, 7, 9, 7, 1])
    assert decisive_mask(previous, 7).tolist() == [False, True, False, True, False]
