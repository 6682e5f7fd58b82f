"""Plausibility measures on hand-written MEDS rows with known answers."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from helpers.meds_data import meds_frame

from seqlm.evaluation.plausibility import (
    ks_distance,
    mark_scored,
    measure,
    same_time_repeats,
    static_outside_prefix,
    time_gaps_seconds,
    unopened_closes,
    value_ranges,
    values_outside,
)
from seqlm.evaluation.plausibility_report import compare, plausibility_table
from seqlm.evaluation.plausibility_rules import EventPair, paired_kinds

T0 = datetime(2100, 1, 1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def scored(rows: list[tuple], context: dict[int, int]) -> pl.DataFrame:
    return mark_scored(meds_frame(rows), context)


def test_pairs_come_from_code_names_by_suffix() -> None:
    kinds = ["ICU_ADMISSION", "ICU_DISCHARGE", "INFUSION_START", "INFUSION_END", "ED_OUT"]
    kinds += ["ED_REGISTRATION", "LAB", "X_ADMISSION", "_ADMISSION", "_DISCHARGE"]
    assert paired_kinds(kinds) == [
        EventPair("ED_REGISTRATION", "ED_OUT"),
        EventPair("ICU_ADMISSION", "ICU_DISCHARGE"),
        EventPair("INFUSION_START", "INFUSION_END"),
    ]


def test_mark_scored_skips_each_subjects_context_rows() -> None:
    rows = [(1, at(0), "A", None, None)] * 3 + [(2, at(0), "B", None, None)] * 2
    frame = scored(rows, {1: 2, 2: 0, 3: 5})
    assert frame["scored"].to_list() == [False, False, True, True, True]


def test_same_time_repeats_count_repeats_and_conflicting_values() -> None:
    rows = [
        (1, at(0), "LAB//A", 1.0, None),  # context: the first of its group
        (1, at(0), "LAB//A", 2.0, None),  # repeat, conflicting
        (1, at(0), "LAB//A", 1.0, None),  # repeat, same value as the first
        (1, at(1), "LAB//B", 5.0, None),
        (1, at(1), "LAB//[UNK]", 1.0, None),  # merged unknowns are not counted
        (1, at(1), "LAB//[UNK]", 2.0, None),
        (1, at(1), "DIAGNOSIS//X", None, None),
        (1, at(1), "DIAGNOSIS//X", None, None),  # repeat, no value either way
        (1, at(2), "LAB//B", 5.0, "POS"),  # another time: no repeat
        (2, at(1), "LAB//B", 6.0, None),  # another subject: no repeat
    ]
    counts = same_time_repeats(scored(rows, {1: 1}))
    assert counts == {
        "DIAGNOSIS": (2, 1, 0),
        "LAB": (5, 2, 1),
        "all": (7, 3, 1),
    }


def test_unopened_closes_follow_the_open_count_in_row_order() -> None:
    rows = [
        (1, at(0), "ICU_ADMISSION//MICU", None, None),  # context
        (1, at(1), "ICU_DISCHARGE//SICU", None, None),  # closes the MICU stay (by kind)
        (1, at(2), "ICU_DISCHARGE//MICU", None, None),  # nothing open: unopened
        (1, at(3), "HOSPITAL_DISCHARGE//HOME", None, None),  # unopened
        (2, at(0), "HOSPITAL_ADMISSION//EW", None, None),
        (2, at(1), "HOSPITAL_DISCHARGE//HOME", None, None),
        (2, at(2), "ED_OUT", None, None),  # ED_REGISTRATION never occurs: no pair
    ]
    closes = unopened_closes(scored(rows, {1: 1}))
    assert closes == {
        "HOSPITAL_ADMISSION/HOSPITAL_DISCHARGE": (2, 1),
        "ICU_ADMISSION/ICU_DISCHARGE": (2, 1),
        "all": (4, 2),
    }


def test_static_rows_count_only_with_a_time() -> None:
    rows = [
        (1, None, "GENDER//F", None, None),  # the prefix: fine
        (1, at(-600_000), "MEDS_BIRTH", None, None),  # from the AGE token: fine
        (1, at(0), "LAB//A", 1.0, None),
        (1, at(1), "GENDER//M", None, None),  # mid-trajectory
        (1, at(2), "AGE", 40.0, None),  # mid-trajectory
    ]
    assert static_outside_prefix(scored(rows, {}), ("GENDER", "AGE")) == 2
    assert static_outside_prefix(scored(rows, {1: 4}), ("GENDER", "AGE")) == 1


def test_values_outside_the_reference_p1_p99() -> None:
    reference = meds_frame([(0, at(0), "LAB//A", float(v), None) for v in range(1, 101)])
    ranges = value_ranges(reference)
    low, high = ranges.row(0)[1:]
    assert low == pytest.approx(1.99) and high == pytest.approx(99.01)
    rows = [
        (1, at(0), "LAB//A", 0.5, None),
        (1, at(0), "LAB//A", 50.0, None),
        (1, at(0), "LAB//A", 100.0, None),
        (1, at(0), "LAB//NEW", 1e9, None),  # no reference range: not counted
        (1, at(0), "LAB//A", None, None),  # no value: not counted
    ]
    assert values_outside(scored(rows, {}), ranges) == (3, 2)


def test_time_gaps_end_at_scored_times() -> None:
    rows = [
        (1, None, "GENDER//F", None, None),
        (1, at(0), "LAB//A", 1.0, None),  # context
        (1, at(0), "LAB//B", 1.0, None),  # same time as context: not a new step
        (1, at(1), "LAB//A", 1.0, None),
        (1, at(1), "LAB//B", 1.0, None),
        (1, at(3), "LAB//A", 1.0, None),
        (2, at(5), "LAB//A", 1.0, None),  # a subject's first time has no gap
        (2, at(5.5), "LAB//A", 1.0, None),
    ]
    gaps = time_gaps_seconds(scored(rows, {1: 2}))
    assert sorted(gaps.tolist()) == [1800.0, 3600.0, 7200.0]


def test_ks_distance_known_values() -> None:
    assert ks_distance(np.array([1.0, 2, 3]), np.array([3.0, 1, 2])) == 0.0
    assert ks_distance(np.array([1.0, 2]), np.array([3.0, 4])) == 1.0
    assert ks_distance(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == 0.5
    assert ks_distance(np.array([]), np.array([1.0])) is None


def test_comparison_ratios_and_the_2x_verdict() -> None:
    def side(conflicting: int) -> pl.DataFrame:
        rows = []
        for step in range(10):
            rows.append((1, at(step), "LAB//A", 1.0, None))
            if step < conflicting:
                rows.append((1, at(step), "LAB//A", 2.0, None))
        return scored(rows, {})

    empty = value_ranges(meds_frame([]))
    real = measure(side(1), ("GENDER",), empty)
    generated = measure(side(5), ("GENDER",), empty)
    report = compare(generated, real)
    row = {r["measure"]: r for r in report.rows}
    conflicting = row["conflicting values / LAB row"]
    assert conflicting["generated"] == pytest.approx(5 / 15)
    assert conflicting["real"] == pytest.approx(1 / 11)
    assert conflicting["ratio"] == pytest.approx((5 / 15) / (1 / 11))
    assert conflicting["within_2x"] is False
    assert row["time gap median (h)"]["within_2x"] is True
    assert row["unopened closes / close"]["generated"] is None  # no closes at all
    assert not report.all_within_2x
    assert compare(real, real).all_within_2x
    assert plausibility_table(report).columns[0].header == "measure"
