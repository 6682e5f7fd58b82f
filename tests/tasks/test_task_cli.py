"""`seqlm task` through a child process: the files it writes, and bad input (exit 2)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers.cli_helpers import run_seqlm
from helpers.eval_fixtures import tiny_gpt, write_run
from helpers.task_data import build_task_corpus, write_task_dataset

from seqlm.corpus import load_corpus

MEDS_DEV_COLUMNS = [
    "subject_id",
    "prediction_time",
    "boolean_value",
    "predicted_boolean_value",
    "predicted_boolean_probability",
]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = write_task_dataset(tmp_path_factory.mktemp("cli"), "future", n_subjects=60)
    corpus = load_corpus(build_task_corpus(root))
    model = tiny_gpt(seed=2, vocab_size=corpus.vocab_size, block_size=32, init_std=0.3)
    write_run(root / "run", model, corpus)
    return root


def _args(task, out, *extra):
    return [
        "task",
        str(task / "run"),
        "--corpus",
        str(task / "corpus"),
        "--labels",
        str(task / "labels"),
        "--out",
        str(out),
        "--resamples",
        "20",
        *extra,
    ]


@pytest.mark.slow  # five child processes, each loading torch: ~20 s of CPU
def test_the_command_writes_task_json_predictions_and_figures(task, tmp_path) -> None:
    out = tmp_path / "out"
    extra = ["--outcome-codes", "OUTCOME", "--horizon", "1d", "--samples", "3", "--max-tokens", "6"]
    done = run_seqlm(*_args(task, out, *extra, "--epochs", "1"))
    assert done.returncode == 0, done.stderr
    assert "held_out labels" in done.stdout and "few labels: 9 labels" in done.stderr
    record = json.loads((out / "task.json").read_text())
    assert set(record["methods"]) == {"zero-shot", "probe", "finetune", "baseline"}
    assert record["labels_by_split"]["held_out"]["labels"] == 9
    assert record["methods"]["zero-shot"]["horizon_s"] == 86_400.0
    for method in record["methods"]:
        frame = pl.read_parquet(out / "predictions" / f"{method}.parquet")
        assert frame.columns == MEDS_DEV_COLUMNS and frame.height == 9
        assert frame["predicted_boolean_probability"].is_between(0, 1).all()
    for name in ("roc.png", "pr.png", "calibration.png", "rejects.parquet"):
        assert (out / name).is_file()
    assert (out / "finetune" / "model.safetensors").is_file()
    again = run_seqlm(*_args(task, out, "--method", "baseline"))
    assert again.returncode == 2 and "not empty" in again.stderr
    assert run_seqlm(*_args(task, out, "--method", "baseline", "--overwrite")).returncode == 0


def test_bad_label_files_are_one_line_naming_file_and_column(task, tmp_path) -> None:
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"subject_id": [1], "time": ["x"], "boolean_value": [True]}).write_parquet(bad)
    args = _args(task, tmp_path / "o", "--method", "baseline")
    args[args.index("--labels") + 1] = str(bad)
    done = run_seqlm(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "'prediction_time'" in lines[0]


def test_zero_shot_without_outcome_codes_is_a_usage_error(task, tmp_path) -> None:
    done = run_seqlm(*_args(task, tmp_path / "o", "--method", "zero-shot"))
    assert done.returncode == 2 and "--outcome-codes" in done.stderr
    done = run_seqlm(*_args(task, tmp_path / "o", "--method", "magic"))
    assert done.returncode == 2 and "unknown method" in done.stderr
