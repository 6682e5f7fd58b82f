"""`distinct_places`: each distinct categorical value's first row and every row's place."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqlm.vocabularies import categories
from seqlm.vocabularies.categories import distinct_places


def _expected(values: list) -> tuple[list[int], list[int]]:
    firsts: dict[str | None, int] = {}
    for row, value in enumerate(values):
        firsts.setdefault(value, row)
    order = list(firsts)
    return list(firsts.values()), [order.index(v) for v in values]


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b//c", "", "d"])), max_size=40))
def test_places_follow_first_rows_with_nulls_as_one_value(values):
    first, place = distinct_places(pl.Series(values, dtype=pl.String).cast(pl.Categorical))
    assert (first.to_list(), place.to_list()) == _expected(values)


@pytest.mark.parametrize("dense_below", [categories.DENSE_CATEGORIES, 0])
def test_hash_lookup_beyond_the_dense_array_gives_the_same_places(dense_below):
    # dense_below=0 sends every column to the hash lookup (`replace_strict`)
    values = ["x", None, "y", "x", None, "z", "y"]
    column = pl.Series(values).cast(pl.Categorical)
    first, place = distinct_places(column, dense_below=dense_below)
    assert (first.to_list(), place.to_list()) == _expected(values)


@given(st.lists(st.one_of(st.none(), st.integers(0, 2**40)), max_size=60))
def test_integer_columns_give_the_same_places_by_array_and_by_hash(values):
    column = pl.Series(values, dtype=pl.UInt64)
    expected = _expected(values)
    by_hash = distinct_places(column, dense_below=0)
    assert (by_hash[0].to_list(), by_hash[1].to_list()) == expected
    if all(v is None or v < 4096 for v in values):
        by_array = distinct_places(column)
        assert (by_array[0].to_list(), by_array[1].to_list()) == expected
