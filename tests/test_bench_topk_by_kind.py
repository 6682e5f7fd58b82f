"""benchmarks/bench_topk_by_kind.py writes the code-sorted MEDS copy its docs figures
compare against: the same rows per shard, each (subject, time) in code order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
from helpers.shared_data import shared_path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_topk_by_kind.py"


def test_the_code_sorted_copy_keeps_every_row_and_orders_each_timestamp(tmp_path):
    meds = shared_path("clinical", "mimic-iv-demo-meds")
    out = tmp_path / "sorted"
    command = [
        sys.executable,
        str(SCRIPT),
        "--write-code-sorted-meds",
        str(meds),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    assert (out / "metadata").resolve() == (meds / "metadata").resolve()
    for shard in sorted((meds / "data").rglob("*.parquet")):
        before = pl.read_parquet(shard, glob=False)
        after = pl.read_parquet(out / "data" / shard.relative_to(meds / "data"), glob=False)
        assert after.height == before.height
        assert after.sort(["subject_id", "time", "code"], maintain_order=True).equals(
            before.sort(["subject_id", "time", "code"], maintain_order=True)
        )
        groups = after.group_by(["subject_id", "time"], maintain_order=True).agg("code")
        assert all(codes == sorted(codes) for codes in groups["code"].to_list())
    # the copy refuses to write over a folder that exists
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode != 0
