"""What an analysis reads: index selection and the layer/head/number lists."""

from __future__ import annotations

import polars as pl
import pytest

from seqlm.analysis.run_inputs import parse_indices, parse_numbers, resolve_device, select_index
from seqlm.errors import ConfigError


def test_index_and_number_lists() -> None:
    assert parse_indices("0,2,4-5", 6, "layers") == [0, 2, 4, 5]
    assert parse_indices(None, 6, "layers") is None
    assert parse_indices("all", 6, "layers") is None
    for bad in ("6", "a", "1-x", ""):
        with pytest.raises(ConfigError):
            parse_indices(bad, 6, "layers")
    assert parse_numbers("8,32", int, "beyond") == (8, 32)
    with pytest.raises(ConfigError):
        parse_numbers("8,x", int, "beyond")


def test_devices() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"  # any torch device name passes unchecked
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="--device must be auto, cpu or cuda"):
        resolve_device("cuda:1", strict=True)


def _index() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "seq_id": list(range(12)),
            "split": ["held_out"] * 9 + ["train"] * 3,
            "group": ["a", "b", "c"] * 4,
            "length": [10] * 12,
        }
    )


def test_select_index_per_group_is_seeded_and_in_seq_id_order() -> None:
    rows = select_index(_index(), "held_out", per_group=2, group_column="group", seed=3)
    assert rows["seq_id"].to_list() == sorted(rows["seq_id"].to_list())
    assert rows.group_by("group").len().sort("group")["len"].to_list() == [2, 2, 2]
    assert set(rows["split"].to_list()) == {"held_out"}
    again = select_index(_index(), "held_out", per_group=2, group_column="group", seed=3)
    assert rows.equals(again)
    assert select_index(_index(), "all").height == 12


def test_select_index_by_tokens_and_its_errors() -> None:
    rows = select_index(_index(), "held_out", max_tokens=25)
    assert rows.height == 3  # whole sequences until 25 tokens are reached: 10 + 10 + 10
    with pytest.raises(ConfigError, match="no sequences in split 'tuning'"):
        select_index(_index(), "tuning")
    with pytest.raises(ConfigError, match="no index column 'bird'"):
        select_index(_index(), "held_out", per_group=1, group_column="bird")
