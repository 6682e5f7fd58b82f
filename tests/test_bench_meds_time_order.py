"""benchmarks/bench_meds_time_order.py: pair consistency and the two set oracles, on MEDS
data whose within-time order is known (fixed or reversed) and on the MIMIC-IV demo."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from helpers.data_cli import write_meds_rows
from helpers.shared_data import shared_path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_meds_time_order.py"
CODES = [f"LAB//{letter}" for letter in "ABCDEFGHIJKL"]  # twelve events a timestamp


def write_dataset(root: Path, held_out_codes: list[str]) -> Path:
    """Train: every timestamp lists the twelve codes in one fixed order; held-out lists
    `held_out_codes` at each of its timestamps."""
    start = datetime(2020, 1, 1)
    for split, codes, subjects in (("train", CODES, range(5)), ("held_out", held_out_codes, [9])):
        rows = [
            (subject, start + timedelta(hours=hour), code, None, None)
            for subject in subjects
            for hour in range(3)
            for code in codes
        ]
        write_meds_rows(root, rows, split=split)
    return root


def bench(root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(root), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_fixed_order_is_consistent_and_learnt_by_the_train_order_oracle(tmp_path):
    result = bench(write_dataset(tmp_path, CODES))
    assert result["code pairs"] == 66 and result["pair consistency"] == 1.0
    assert result["set oracle top-10, train order"] == 1.0
    # Random order: 10 of 12 and 10 of 11 due events covered, then always found.
    assert result["set oracle top-10, random order"] == round((10 / 12 + 10 / 11 + 10) / 12, 4)


def test_the_train_order_misleads_on_a_reversed_order(tmp_path):
    result = bench(write_dataset(tmp_path, CODES[::-1]))
    # The first two events of each held-out timestamp are ranked last of twelve, eleven.
    assert result["set oracle top-10, train order"] == round(10 / 12, 4)


def test_on_the_mimic_demo_the_order_is_weak():
    result = bench(shared_path("clinical", "mimic-iv-demo-meds"))
    assert result["events"] == 42544
    assert 0.5 < result["pair consistency"] < 0.7
    assert 0.6 < result["set oracle top-10, random order"] < 0.75
    gain = result["set oracle top-10, train order"] - result["set oracle top-10, random order"]
    assert abs(gain) < 0.02
