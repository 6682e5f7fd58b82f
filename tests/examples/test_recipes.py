"""Each recipe in examples/ runs as its README documents it (minutes each: slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.shared_data import REPO_ROOT, shared_path

EXAMPLES = REPO_ROOT / "examples"


def run_recipe(script: Path, *args: str, steps: int = 0, **budgets: str) -> None:
    # The scripts call `seqlm`; put this interpreter's console scripts first on PATH.
    env = dict(os.environ, STEPS=str(steps), **budgets)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", str(script), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def model_beside_baselines(eval_json: Path) -> dict[str, float]:
    payload = json.loads(eval_json.read_text())
    rows = payload["summary"]
    return {row["model"]: row["perplexity"] for row in rows}


@pytest.mark.slow
def test_new_domain_recipe(tmp_path):
    run_recipe(EXAMPLES / "new_domain" / "run.sh", str(tmp_path), steps=60)
    perplexity = model_beside_baselines(tmp_path / "eval" / "eval.json")
    assert perplexity["model"] < perplexity["uniform"]
    assert any((tmp_path / "generated").iterdir())


@pytest.mark.slow
def test_prism_cardiac_recipe(tmp_path):
    meds = shared_path("clinical", "mimic-iv-demo-meds")
    run_recipe(EXAMPLES / "prism_cardiac" / "run.sh", str(meds), str(tmp_path), BUDGET="20ktok")
    perplexity = model_beside_baselines(tmp_path / "eval" / "eval.json")
    assert {"model", "unigram"} <= set(perplexity)
    assert any((tmp_path / "generated").iterdir())


@pytest.mark.slow
def test_finchgpt_recipe(tmp_path):
    run_recipe(
        EXAMPLES / "finchgpt" / "run.sh", str(tmp_path), BUDGET="20ktok", BIRD_BUDGET="5ktok"
    )
    lesion = json.loads((tmp_path / "lesion" / "lesion.json").read_text())
    assert lesion
    pooled = json.loads((tmp_path / "lesion-pool" / "lesion.json").read_text())
    assert "per-bird n-gram" in {row["model"] for row in pooled["rows"]}
    init = json.loads((tmp_path / "lesion" / "run-bird1" / "config.json").read_text())["init"]
    assert init["new_tokens"] == 0 and init["shared_tokens"] > 0
    assert (tmp_path / "lesion" / "lesion.png").exists()
    assert any((tmp_path / "attention-bird1").glob("*.png"))
    assert any((tmp_path / "span-bird1").iterdir())


@pytest.mark.slow
def test_mimic_next_event_recipe(tmp_path):
    meds = shared_path("clinical", "mimic-iv-demo-meds")
    run_recipe(EXAMPLES / "mimic_next_event" / "run.sh", str(meds), str(tmp_path), BUDGET="20ktok")
    perplexity = model_beside_baselines(tmp_path / "eval" / "eval.json")
    assert perplexity["model"] < perplexity["uniform"]
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recipe["budget"] == "20,000 tokens" and recipe["applied"]
    with_history = model_beside_baselines(tmp_path / "eval-sequence-history" / "eval.json")
    assert {"model without sequence history", "LSTM + sequence history"} <= set(with_history)
    assert with_history["model without sequence history"] == pytest.approx(perplexity["model"])


@pytest.mark.slow
def test_finchgpt_splits_recipe(tmp_path):
    run_recipe(
        EXAMPLES / "finchgpt" / "splits.sh",
        str(tmp_path),
        SEEDS="0 1",
        BUDGET="20ktok",
        BIRD_BUDGET="5ktok",
    )
    for name in ("pooled-model", "per-bird-models"):
        payload = json.loads((tmp_path / name / "lesion_splits.json").read_text())
        assert [s["splits"]["seed"] for s in payload["splits"]] == [0, 1]
        bird1 = next(
            r for r in payload["rows"] if r["group"] == "bird1" and r["condition"] == "pre"
        )
        assert bird1["bouts"] > 10 and len(bird1["per_split"]) == 2
        assert (tmp_path / name / "lesion_splits.png").exists()
