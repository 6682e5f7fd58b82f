from __future__ import annotations

import polars as pl

import seqlm.config
import seqlm.events
from seqlm.corpora_adapters import base
from seqlm.corpora_adapters.base import RejectLog
from seqlm.errors import InputError


def test_reject_log_counts_rows_and_frames():
    log = RejectLog()
    log.add("f.csv", 3, "empty label", column="label")
    log.extend(pl.DataFrame({"file": ["g.csv", "g.csv"], "row": [1, 2], "reason": ["x", "x"]}))
    assert len(log) == 3
    assert log.counts_by_reason() == {"x": 2, "empty label": 1}
    frame = log.to_frame()
    assert frame.columns == ["file", "row", "column", "reason"]
    assert frame.filter(pl.col("file") == "f.csv")["row"].item() == 3


def test_input_error_names_file_row_column():
    err = InputError("not a number", file="a.csv", row=7, column="onset_s")
    assert str(err) == "a.csv, row 7, column 'onset_s': not a number"


def test_moved_names_are_re_exported_for_one_release():
    # The event schema moved to seqlm.events and the option readers to seqlm.config;
    # old imports from corpora_adapters.base get the same objects.
    for name in ("EVENT_COLUMNS", "EVENT_SCHEMA", "SORT_KEY", "SPLITS", "EventTable"):
        assert getattr(base, name) is getattr(seqlm.events, name)
    assert base.time_in_seconds is seqlm.events.time_in_seconds
    for name in ("load_toml", "options_from_mapping", "parse_option_strings"):
        assert getattr(base, name) is getattr(seqlm.config, name)
