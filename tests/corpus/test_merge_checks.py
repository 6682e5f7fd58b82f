"""`merge_checks` on rows in sequence order (its shortcuts: duplicates only looked for
in runs of equal (entity, time), restarts only in entities whose `order` falls) against
the plain definition on every row, and `in_sequence_order` (the sort the build skips)
against the sort it stands for."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.corpus.merge_checks import merge_checks
from seqlm.corpus.partitions import (
    _grouped_events,
    _in_sequence_order,
    in_sequence_order,
    sequence_order,
)


def plain_merge_checks(events: pl.LazyFrame) -> dict[str, int]:
    """The definition, with no use of the row order."""
    timed = events.filter(pl.col("time").is_not_null())
    duplicates = (
        timed.group_by("entity", "time", "code")
        .len()
        .filter(pl.col("len") > 1)
        .group_by("entity")
        .agg((pl.col("len") - 1).sum().alias("rows"))
        .collect()
    )
    time = pl.col("time").sort_by("order")
    start = time.min()
    restarts = (
        timed.group_by("entity")
        .agg(((time == start) & (time.shift(1) > start)).sum().alias("restarts"))
        .filter(pl.col("restarts") > 0)
        .collect()
    )
    return {
        "duplicate_events": int(duplicates["rows"].sum()),
        "entities_with_duplicates": duplicates.height,
        "time_restarts": int(restarts["restarts"].sum()),
        "entities_with_time_restarts": restarts.height,
    }


def random_events(seed: int, n: int = 3000) -> pl.DataFrame:
    """Events with few distinct times and codes (many duplicates), some static rows,
    and `order` that runs backwards in time for some entities (restarts)."""
    rng = np.random.default_rng(seed)
    time = rng.integers(0, 6, n).astype(float)
    time[rng.random(n) < 0.05] = np.nan
    return pl.DataFrame(
        {
            "entity": rng.choice([f"e{i}" for i in range(40)], n),
            "time": time,
            "order": rng.permutation(n) if seed % 2 else np.arange(n),
            "code": rng.choice(["a", "b", "c", ""], n),
        }
    ).with_columns(pl.col("time").fill_nan(None), pl.col("code").replace("", None))


@pytest.mark.parametrize("seed", range(6))
def test_merge_checks_equal_the_plain_definition(seed):
    events = random_events(seed)
    ordered = _grouped_events(events.lazy()).collect()
    found = merge_checks(ordered)
    assert found == plain_merge_checks(events.lazy())
    assert found["duplicate_events"] > 0


def test_restarts_found_when_order_runs_back():
    rows = pl.DataFrame(
        {
            "entity": ["a"] * 4 + ["b"] * 3,
            "time": [0.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
            "order": [0, 3, 1, 2, 4, 5, 6],
            "code": ["x", "y", "x", "x", "x", "x", "x"],
        }
    )
    # In read order `a` goes 0, 1, 2 and back to 0: one restart; `b` never goes back.
    assert merge_checks(rows)["time_restarts"] == 1
    assert merge_checks(rows)["entities_with_time_restarts"] == 1


@pytest.mark.parametrize("seed", range(6))
def test_sorted_rows_are_recognised_and_unsorted_ones_sorted(seed):
    events = random_events(seed)
    ordered = _grouped_events(events.lazy()).collect()
    assert in_sequence_order(ordered)
    assert not in_sequence_order(events)
    # Entities in another order (name order) are in sequence order too.
    by_name = ordered.sort("entity", maintain_order=True)
    assert in_sequence_order(by_name)
    # An entity in two runs is not (its rows are apart).
    apart = pl.concat([by_name.slice(1), by_name.head(1)])
    assert not in_sequence_order(apart)


def test_ties_nulls_and_nans_are_judged_as_the_sort_would():
    base = {"entity": ["a", "a", "a"], "code": ["x"] * 3}
    static_first = pl.DataFrame({**base, "time": [None, 1.0, 1.0], "order": [5, 0, 1]})
    assert in_sequence_order(static_first)
    static_last = pl.DataFrame({**base, "time": [1.0, None, 2.0], "order": [0, 1, 2]})
    assert not in_sequence_order(static_last)
    tie_backwards = pl.DataFrame({**base, "time": [1.0, 1.0, 2.0], "order": [1, 0, 2]})
    assert not in_sequence_order(tie_backwards)
    nan = pl.DataFrame({**base, "time": [1.0, 2.0, float("nan")], "order": [0, 1, 2]})
    assert not in_sequence_order(nan)
    null_entity = pl.DataFrame(
        {
            "entity": ["a", None, None],
            "code": ["x"] * 3,
            "time": [1.0, 2.0, 3.0],
            "order": [0, 1, 2],
        }
    )
    assert not in_sequence_order(null_entity)


@pytest.mark.parametrize("seed", range(4))
def test_ordering_sorts_only_what_needs_it_and_equals_the_sort(seed):
    events = random_events(seed)
    ordered = _grouped_events(events.lazy()).collect()
    # Entities' runs in order but cut in pieces and shuffled, as a streaming join may
    # emit them: put back by `order` (the pieces were in `order` before).
    by_order = ordered.sort("order")
    if sequence_order(by_order) != "ordered":
        by_order = ordered.with_columns(pl.int_range(pl.len()).alias("order"))
    pieces = [by_order.slice(i, 97) for i in range(0, by_order.height, 97)]
    shuffled = pl.concat([pieces[i] for i in np.random.default_rng(seed).permutation(len(pieces))])
    assert sequence_order(shuffled) in ("runs split", "unordered")
    for rows in (events, by_order, shuffled):
        got = _in_sequence_order(rows)
        want = _grouped_events(rows.lazy()).collect()
        # The same rows in the same order within each entity (entities in any order).
        assert got.sort("entity", maintain_order=True).equals(
            want.sort("entity", maintain_order=True)
        )
        assert in_sequence_order(got)
