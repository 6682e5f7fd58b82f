"""`TokenIndex`: token ids by hash equal the map lookup (`replace_strict`) they replace."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from seqlm.vocabularies.token_index import TokenIndex

TEXT = st.text(alphabet="ab/\u00e9 Q0", max_size=6)


def _by_map(tokens: list[str], ids: list[int], strings: list[str | None]) -> list[int | None]:
    found = pl.Series(strings, dtype=pl.String).replace_strict(
        pl.Series(tokens, dtype=pl.String), pl.Series(ids), default=None, return_dtype=pl.Int64
    )
    return found.to_list()


@given(
    tokens=st.lists(TEXT, unique=True, max_size=30),
    strings=st.lists(st.one_of(st.none(), TEXT), max_size=40),
)
def test_ids_by_hash_equal_the_map_lookup(tokens, strings):
    ids = [3 * i + 7 for i in range(len(tokens))]
    index = TokenIndex.build(pl.Series(tokens, dtype=pl.String), pl.Series(ids))
    assert index is not None
    found = index.ids_of(pl.Series(strings, dtype=pl.String))
    assert found.dtype == pl.Int64
    assert found.to_list() == _by_map(tokens, ids, strings)


def test_a_string_sharing_a_tokens_hash_is_not_taken_for_it(monkeypatch):
    """Every string hashes alike: a vocabulary of one token still finds only itself."""
    monkeypatch.setattr(pl.Series, "hash", lambda self, seed=0: pl.Series([5] * self.len()))
    index = TokenIndex.build(pl.Series(["LAB//1"]), pl.Series([9]))
    assert index is not None
    assert index.ids_of(pl.Series(["LAB//1", "LAB//2", None])).to_list() == [9, None, None]
    # Two tokens that share a hash: no index (the callers keep the map lookup).
    assert TokenIndex.build(pl.Series(["a", "b"]), pl.Series([4, 5])) is None


def test_an_empty_vocabulary_finds_nothing():
    index = TokenIndex.build(pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.Int64))
    assert index is not None
    assert index.ids_of(pl.Series(["a", None])).to_list() == [None, None]
