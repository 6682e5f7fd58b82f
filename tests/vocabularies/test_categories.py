"""`distinct_places`: each distinct categorical value's first row and every row's place."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqlm.vocabularies import categories
from seqlm.vocabularies.categories import distinct_places


def _expected(values: list[str | None]) -> tuple[list[int], list[int]]:
    firsts: dict[str | None, int] = {}
    for row, value in enumerate(values):
        firsts.setdefault(value, row)
    order = list(firsts)
    return list(firsts.values()), [order.index(v) for v in values]


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b//c", "", "d"])), max_size=40))
def test_places_follow_first_rows_with_nulls_as_one_value(values):
    first, place = distinct_places(pl.Series(values, dtype=pl.String).cast(pl.Categorical))
    assert (first.to_list(), place.to_list()) == _expected(values)


@pytest.mark.parametrize("dense", [True, False])
def test_hash_lookup_beyond_the_dense_array_gives_the_same_places(monkeypatch, dense):
    if not dense:
        monkeypatch.setattr(categories, "DENSE_CATEGORIES", 0)
    values = ["x", None, "y", "x", None, "z", "y"]
    first, place = distinct_places(pl.Series(values).cast(pl.Categorical))
    assert (first.to_list(), place.to_list()) == _expected(values)
