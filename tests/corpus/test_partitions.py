"""The sorted work file (`partitions.write_sorted_file` / `read_sorted_file`): what the
later stages read back is what the sort stage wrote, whatever its `order` column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpus.partitions import (
    SORTED_COLUMNS,
    read_sorted_file,
    read_work_file,
    write_sorted_file,
)


def _rows(orders: list[int]) -> pl.DataFrame:
    n = len(orders)
    return pl.DataFrame(
        {
            "entity": [i // 3 for i in range(n)],
            "time": list(range(n)),
            "order": orders,
            "kind": ["LAB" if i % 2 else "DX" for i in range(n)],
            "code": [f"LAB//{i % 5}" for i in range(n)],
            "value": [float(i) if i % 4 else None for i in range(n)],
            "text": [None if i % 3 else f"t{i}" for i in range(n)],
            "split": ["train"] * n,
        },
        schema_overrides={"value": pl.Float64},
    )


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(
        st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30),
        st.integers(0, 10**9).map(lambda start: [start + i for i in range(25)]),
    )
)
def test_sorted_file_reads_back_what_was_written(tmp_path_factory, orders):
    path = Path(tmp_path_factory.mktemp("sorted")) / "sorted-00000.arrow"
    rows = _rows(orders)
    stored = write_sorted_file(rows, path)
    assert stored["order"].to_list() == orders
    back = read_sorted_file(path)
    assert back.columns == SORTED_COLUMNS
    assert back.cast({c: pl.String for c in ("kind", "code", "text")}).equals(
        rows.select(SORTED_COLUMNS)
    )
    assert read_sorted_file(path, ["code", "order"], strings=False)["order"].to_list() == orders


def test_order_in_file_order_is_stored_as_its_step_from_the_row_number(tmp_path):
    # Rows in file order (one rejected after the third) keep two values on disk.
    orders = [10, 11, 12, 14, 15, 16]
    path = tmp_path / "sorted-00000.arrow"
    write_sorted_file(_rows(orders), path)
    assert read_work_file(path, ["order"])["order"].to_list() == [10, 10, 10, 11, 11, 11]
    assert read_sorted_file(path, ["order"])["order"].to_list() == orders
