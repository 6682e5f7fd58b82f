"""examples/mimic_tasks/run.sh runs end to end on the MIMIC-IV demo (minutes: slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.shared_data import REPO_ROOT, shared_path


@pytest.mark.slow
def test_the_mimic_task_recipe_runs_all_four_methods(tmp_path) -> None:
    meds = shared_path("clinical", "mimic-iv-demo-meds")
    env = dict(os.environ, BUDGET="20ktok", MINUTES="2", SAMPLES="2", MAX_TOKENS="16", EPOCHS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = REPO_ROOT / "examples" / "mimic_tasks" / "run.sh"
    done = subprocess.run(
        ["bash", str(script), str(meds), str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "task" / "task.json").read_text())
    assert set(record["methods"]) == {"zero-shot", "probe", "finetune", "baseline"}
    assert record["rows_read"] == 74
    assert (
        sum(s["labels"] for s in record["labels_by_split"].values())
        + sum(record["rejects"].values())
        == 74
    )
    assert "few labels" in done.stderr
