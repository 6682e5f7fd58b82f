"""The MEDS dataset-wide checks and code summary (seqlm.corpora_adapters.meds_checks)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters import meds_checks
from seqlm.corpora_adapters.meds_layout import locate_dataset

ROW = st.tuples(
    st.none() | st.integers(1, 4),
    st.none() | st.sampled_from(["LAB//a", "LAB//b", "GENDER//F", "DX//c", ""]),
    st.booleans(),
)


def _summary_by_grouping(dataset) -> pl.DataFrame:
    """The code summary's distinct codes by grouping every row's code string."""
    return (
        meds_checks._raw(list(dataset.shards), ["subject_id", "code", "time"], ("subject_id",))
        .filter(pl.col("code").is_not_null() & pl.col("subject_id").is_not_null())
        .group_by("code")
        .agg(static=pl.col("untimed").any())
        .collect()
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.lists(ROW, max_size=25), min_size=1, max_size=3),
    st.integers(1, 8),
    st.booleans(),
)
def test_codes_read_as_dictionaries_equal_grouping_the_rows(
    tmp_path: Path, shards: list, group_rows: int, statistics: bool
) -> None:
    """Nulls in any of the three columns, several row groups, with or without
    statistics: the same codes and static flags as grouping every row's string."""
    folder = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
    (folder / "data").mkdir(parents=True)
    for number, rows in enumerate(shards):
        table = pa.table(
            {
                # Leaf columns before the three (their statistics come first).
                "extra": pa.array([{"a": 1, "b": None}] * len(rows)),
                "subject_id": pa.array([r[0] for r in rows], pa.int64()),
                "time": pa.array(
                    [None if r[2] else datetime(2020, 1, 1) for r in rows], pa.timestamp("us")
                ),
                "code": pa.array([r[1] for r in rows], pa.string()),
            }
        )
        path = folder / "data" / f"{number}.parquet"
        pq.write_table(table, path, row_group_size=group_rows, write_statistics=statistics)
    dataset = locate_dataset([folder], {})
    found = meds_checks._dictionary_codes(dataset).sort("code")
    assert found.equals(_summary_by_grouping(dataset).sort("code"))
    summary = meds_checks.code_summary(dataset)
    assert summary.used == found.height
