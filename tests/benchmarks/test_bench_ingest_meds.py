"""benchmarks/bench_ingest_meds.py's replicas: copies with disjoint subjects, and the
many-subject variant (each subject cut into runs of K rows) with its splits."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers.benchmarks import load_benchmark

DEMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "clinical" / "mimic-iv-demo-meds"
pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="MIMIC-IV demo not present")


def _rows(root: Path) -> pl.DataFrame:
    frames = [
        pl.read_parquet(f).with_columns(split=pl.lit(f.parent.name))
        for f in sorted((root / "data").rglob("*.parquet"))
    ]
    return pl.concat(frames, how="vertical_relaxed")


def test_dataset_names():
    bench = load_benchmark("bench_ingest_meds")
    assert bench.dataset_shape("x20") == (20, None, False)
    assert bench.dataset_shape("x2s90") == (2, 90, False)
    assert bench.dataset_shape("x20c") == (20, None, True)
    assert bench.dataset_shape("x2s90c") == (2, 90, True)
    with pytest.raises(SystemExit, match="x20s90"):
        bench.dataset_shape("x2sx")


def test_subject_runs_keep_rows_order_and_splits(tmp_path: Path):
    bench = load_benchmark("bench_ingest_meds")
    written = bench.replicate(DEMO, tmp_path / "x2s90", 2, subject_rows=90)
    demo, runs = _rows(DEMO), _rows(tmp_path / "x2s90")
    assert written == runs.height == 2 * demo.height
    # At most 90 rows a subject, and every original subject's rows in their order.
    assert runs.group_by("subject_id").len()["len"].max() == 90
    first_copy = runs.filter(pl.col("subject_id") // bench.RUN_OFFSET < bench.SUBJECT_OFFSET)
    original = first_copy.with_columns(pl.col("subject_id") // bench.RUN_OFFSET)
    columns = ["subject_id", "time", "code"]
    assert original.select(columns).equals(demo.select(columns))
    assert runs["subject_id"].n_unique() > 20 * demo["subject_id"].n_unique()
    # Each run is listed in its subject's split, and in the folder of that split.
    splits = pl.read_parquet(tmp_path / "x2s90" / "metadata" / "subject_splits.parquet")
    assert splits["subject_id"].n_unique() == splits.height == runs["subject_id"].n_unique()
    folders = runs.select("subject_id", "split").unique()
    joined = folders.join(splits, on="subject_id", suffix="_meta")
    assert joined.height == folders.height
    assert (joined["split_meta"] == joined["split"]).all()


def test_codes_per_copy_multiply_the_vocabulary_but_keep_meds_codes(tmp_path: Path):
    bench = load_benchmark("bench_ingest_meds")
    bench.replicate(DEMO, tmp_path / "x2c", 2, codes_per_copy=True)
    demo, copies = _rows(DEMO), _rows(tmp_path / "x2c")
    second = copies.filter(pl.col("subject_id") >= bench.SUBJECT_OFFSET)
    first = copies.filter(pl.col("subject_id") < bench.SUBJECT_OFFSET)
    assert first["code"].cast(pl.String).equals(demo["code"].cast(pl.String))
    codes = demo["code"].cast(pl.String)
    expected = pl.Series([c if c.startswith("MEDS_") else f"{c}//copy1" for c in codes.to_list()])
    assert second["code"].cast(pl.String).to_list() == expected.to_list()
    assert copies["code"].n_unique() > 1.9 * demo["code"].n_unique()
