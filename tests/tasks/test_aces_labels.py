"""ACES extraction through es-aces equals what `aces-cli` writes for the same config and
data. Needs the optional extra (es-aces, which needs polars < 2) and `aces-cli` on PATH."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from helpers.task_data import write_task_dataset

from seqlm.errors import ConfigError
from seqlm.tasks.aces_labels import extract_aces_labels

HAVE_ACES = importlib.util.find_spec("aces") is not None and shutil.which("aces-cli") is not None
needs_aces = pytest.mark.skipif(
    not HAVE_ACES,
    reason="es-aces not installed (pip install 'seqlm[aces]'; es-aces 0.7 needs polars < 2)",
)

# Prediction at each SEQ//B; the label: OUTCOME within the next day.
TASK_YAML = """
predicates:
  seq_b:
    code: SEQ//B
  outcome:
    code: OUTCOME
trigger: seq_b
windows:
  input:
    start: null
    end: trigger
    start_inclusive: true
    end_inclusive: true
    index_timestamp: end
  target:
    start: input.end
    end: start + 1d
    start_inclusive: false
    end_inclusive: true
    label: outcome
"""


def _aces_cli(config: Path, dataset: Path, out: Path) -> pl.DataFrame:
    shards = sorted(p.relative_to(dataset / "data") for p in (dataset / "data").rglob("*.parquet"))
    names = ",".join(str(s.with_suffix("")) for s in shards)
    command = [
        "aces-cli",
        "-m",
        "data=sharded",
        "data.standard=meds",
        f"data.root={dataset / 'data'}",
        f"data.shard={names}",
        f"cohort_dir={out}",
        "cohort_name=task",
        f"config_path={config}",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=out)
    files = sorted((out / "task").rglob("*.parquet"))
    frame = pl.concat([pl.read_parquet(f, glob=False) for f in files])
    return frame.sort("subject_id", "prediction_time")


@needs_aces
def test_extraction_equals_aces_cli(tmp_path) -> None:
    root = write_task_dataset(tmp_path / "data", "future", n_subjects=40)
    config = tmp_path / "task.yaml"
    config.write_text(TASK_YAML)
    ours = extract_aces_labels(config, root / "meds")
    theirs = _aces_cli(config, root / "meds", tmp_path)
    assert ours.height == 40 and int(ours["boolean_value"].sum()) == 20
    assert ours.select(theirs.columns).equals(theirs.cast(ours.select(theirs.columns).schema))


@pytest.mark.skipif(HAVE_ACES, reason="checks the message shown without es-aces")
def test_without_the_extra_the_error_says_how_to_install(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"seqlm\[aces\]"):
        extract_aces_labels(tmp_path / "task.yaml", tmp_path)
