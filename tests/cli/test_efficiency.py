"""`seqlm efficiency` and `seqlm calibrate` on a real (small) Bengalese finch
annotation file shipped with the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli_helpers import ingest_bird1, run

SMALL = [
    "--set", "model.n_layer=4",
    "--set", "model.n_embd=32",
    "--set", "model.block_size=16",
    "--set", "batch_size=2",
    "--set", "evaluations=2",
    "--set", "eval_batches=2",
    "--set", "warmup_steps=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def finch_corpus(tmp_path_factory) -> Path:
    return ingest_bird1(tmp_path_factory.mktemp("cli_efficiency") / "bird1")


def test_efficiency_table_plot_and_reuse(finch_corpus, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["efficiency", str(finch_corpus), "--out", str(out), "--budget", "6steps"]
    argv += ["--methods", "baseline,pld,stacking", "--seeds", "2", *SMALL]
    argv += ["--set", "stacking.start_depth=2", "--set", "stacking.grow_at=[0.5]"]
    assert run(argv) == 0
    printed = capsys.readouterr().out
    assert "reference" in printed and "pld" in printed and "stacking" in printed
    results = json.loads((out / "results.json").read_text())
    assert [s["method"] for s in results["summaries"]] == ["baseline", "pld", "stacking"]
    assert len(results["runs"]) == 6
    for entry in results["runs"]:
        assert entry["cost_used"] >= results["budget"]
        assert entry["curve"][-1][3] == entry["final_loss"]
    baseline = [r for r in results["runs"] if r["method"] == "baseline"]
    pld = [r for r in results["runs"] if r["method"] == "pld"]
    # Skipping blocks makes steps cheaper, so the same budget buys at least as many.
    assert min(r["steps"] for r in pld) >= max(r["steps"] for r in baseline)
    table = (out / "efficiency.md").read_text()
    assert table.count("\n| ") == 4 and "vs baseline" in table
    assert (out / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
    # Finished runs are read back, not trained again.
    stamp = (out / "pld" / "seed_0" / "model.safetensors").stat().st_mtime_ns
    assert run(argv) == 0
    assert (out / "pld" / "seed_0" / "model.safetensors").stat().st_mtime_ns == stamp


def test_calibrate_then_reference_time_budget(finch_corpus, tmp_path, capsys):
    table = tmp_path / "calibration.json"
    small = SMALL[:8]  # the model and the batch
    assert run(["calibrate", str(finch_corpus), "--out", str(table), "--repeats", "1", *small]) == 0
    data = json.loads(table.read_text())
    assert data["n_layer"] == 4 and len(data["train_s_per_token"]) == 5
    out = tmp_path / "cmp"
    assert data["batch_size"] == 2 and data["context"] == 16
    budget = str(6 * data["train_s_per_token"][4] * 2 * 16)
    argv = ["efficiency", str(finch_corpus), "--out", str(out), "--budget", budget]
    argv += ["--unit", "reference_s", "--calibration", str(table), "--methods", "baseline"]
    argv += ["--seeds", "1", *SMALL]
    assert run(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["unit"] == "reference_s"
    assert results["runs"][0]["steps"] >= 6


def test_bad_options_are_errors(finch_corpus, tmp_path, capsys):
    base = ["efficiency", str(finch_corpus), "--out", str(tmp_path / "x")]
    assert run([*base, "--methods", "pld,magic"]) == 2
    assert "unknown methods" in capsys.readouterr().err
    assert run([*base, "--methods", "pld"]) == 2
    assert run([*base, "--set", "speed=3"]) == 2
    assert run([*base, "--budget", "lots"]) == 2
    assert run([*base, "--unit", "joules", "--seeds", "1"]) == 2
