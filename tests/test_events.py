"""The event schema on the ground floor: EventTable.from_frame and time_in_seconds."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from seqlm.errors import InputError
from seqlm.events import EVENT_COLUMNS, EVENT_SCHEMA, SORT_KEY, EventTable, time_in_seconds


def test_from_frame_fills_casts_and_sorts():
    frame = pl.DataFrame({"entity": ["b", "a", "a"], "time": [1, 2, 1], "code": ["x", "y", "z"]})
    table = EventTable.from_frame(frame).collect()
    assert table.columns == list(EVENT_COLUMNS)
    assert table["entity"].to_list() == ["a", "a", "b"]
    assert table["code"].to_list() == ["z", "y", "x"]
    assert table["time"].dtype == pl.Float64
    assert table["kind"].to_list() == ["event"] * 3
    assert table["value"].null_count() == 3


def test_from_frame_requires_code():
    with pytest.raises(InputError, match="code"):
        EventTable.from_frame(pl.DataFrame({"entity": ["a"]}))


def test_from_frame_keeps_datetimes_and_attributes_and_the_unsorted_frame():
    start = dt.datetime(2020, 1, 1)
    frame = pl.DataFrame(
        {
            "entity": ["p", "p"],
            "time": [start + dt.timedelta(seconds=90), start],
            "code": ["b", "a"],
            "condition": ["x", "x"],
        }
    )
    table = EventTable.from_frame(frame, attributes=["condition"])
    collected = table.collect()
    assert isinstance(collected.schema["time"], pl.Datetime)
    assert collected["code"].to_list() == ["a", "b"]  # sorted by SORT_KEY
    assert table.columns == [*EVENT_COLUMNS, "condition"]
    assert table.unsorted is not None
    assert table.unsorted.collect()["code"].to_list() == ["b", "a"]  # input order


def test_schema_names_every_column_once():
    assert tuple(EVENT_SCHEMA) == EVENT_COLUMNS
    assert set(SORT_KEY) <= set(EVENT_COLUMNS)


@pytest.mark.parametrize("datetimes", [False, True])
def test_time_in_seconds_counts_from_each_entitys_first_event(datetimes: bool):
    seconds = [10.0, 12.5, 100.0, 160.0]
    start = dt.datetime(2021, 5, 1)
    times = [start + dt.timedelta(seconds=s) for s in seconds] if datetimes else seconds
    frame = pl.DataFrame({"entity": ["a", "a", "b", "b"], "time": times})
    out = frame.select(time_in_seconds(pl.col("time"), frame.schema["time"]))
    assert out["time"].to_list() == [0.0, 2.5, 0.0, 60.0]
