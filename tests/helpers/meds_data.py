"""Small MEDS datasets written by the tests (MEDS 0.4 layout unless told otherwise)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

MEDS_SCHEMA = {
    "subject_id": pl.Int64,
    "time": pl.Datetime("us"),
    "code": pl.String,
    "numeric_value": pl.Float32,
    "text_value": pl.String,
}


def meds_frame(rows: Sequence[tuple], schema: Mapping[str, pl.DataType] | None = None):
    """Rows of (subject_id, time, code, numeric_value, text_value) as a MEDS frame."""
    return pl.DataFrame(rows, schema=dict(schema or MEDS_SCHEMA), orient="row")


def write_meds(
    root: Path,
    shards: Mapping[str, pl.DataFrame],
    splits: Mapping[int, str] | None = None,
    codes: Sequence[str] | None = None,
    meds_version: str = "0.4.0",
) -> Path:
    """Write `data/<name>` shards and the metadata folder; return the dataset root."""
    for name, frame in shards.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
    metadata = root / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    (metadata / "dataset.json").write_text(
        json.dumps({"dataset_name": "synthetic", "meds_version": meds_version})
    )
    if splits is not None:
        pl.DataFrame(
            {"subject_id": list(splits), "split": list(splits.values())},
            schema={"subject_id": pl.Int64, "split": pl.String},
        ).write_parquet(metadata / "subject_splits.parquet")
    if codes is not None:
        pl.DataFrame(
            {"code": list(codes), "description": [f"about {c}" for c in codes]}
        ).write_parquet(metadata / "codes.parquet")
    return root


def t(day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A time on day `day` of January 2100 (MEDS demo dates are shifted like this)."""
    return datetime(2100, 1, day, hour, minute)
