from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pytest

from seqlm.config import options_from_mapping, parse_option_strings
from seqlm.corpora_adapters.base import RejectLog
from seqlm.errors import ConfigError, InputError
from seqlm.events import EVENT_COLUMNS, EventTable


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


def test_reject_log_counts_rows_and_frames():
    log = RejectLog()
    log.add("f.csv", 3, "empty label", column="label")
    log.extend(pl.DataFrame({"file": ["g.csv", "g.csv"], "row": [1, 2], "reason": ["x", "x"]}))
    assert len(log) == 3
    assert log.counts_by_reason() == {"x": 2, "empty label": 1}
    frame = log.to_frame()
    assert frame.columns == ["file", "row", "column", "reason"]
    assert frame.filter(pl.col("file") == "f.csv")["row"].item() == 3


@dataclass
class _Options:
    gap: float = 0.5
    labels: list[str] = field(default_factory=list)
    keep: bool = True
    name: str | None = None


def test_options_from_strings_parse_as_toml_literals():
    mapping = parse_option_strings(["gap=0.25", "labels=['i','j']", "keep=false", "name=bird"])
    options = options_from_mapping(_Options, mapping)
    assert options == _Options(gap=0.25, labels=["i", "j"], keep=False, name="bird")


def test_options_reject_unknown_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown option"):
        options_from_mapping(_Options, {"gapp": 1})
    with pytest.raises(ConfigError, match="number"):
        options_from_mapping(_Options, {"gap": "soon"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_option_strings(["gap"])


def test_input_error_names_file_row_column():
    err = InputError("not a number", file="a.csv", row=7, column="onset_s")
    assert str(err) == "a.csv, row 7, column 'onset_s': not a number"
