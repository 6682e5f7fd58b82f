"""lesion_study: `seqlm lesion` in one call, on real finch song (bundled lesion data)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers.cli_helpers import run_seqlm
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run

from seqlm.studies.lesion import ALL_GROUPS, LesionOptions, lesion_comparison, lesion_json
from seqlm.studies.lesion_run import LesionRequest, lesion_study


def test_runs_given_as_one_for_all_or_one_per_group() -> None:
    request = LesionRequest(runs=("pooled", "bird3=b3", "bird4=dir/a=b"))
    assert request.given_runs() == {ALL_GROUPS: "pooled", "bird3": "b3", "bird4": "dir/a=b"}


def test_given_runs_are_compared_and_written(tmp_path) -> None:
    finch = small_finch_corpus(tmp_path / "finch", birds=(3,))
    model = tiny_gpt(seed=2, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    run = write_run(tmp_path / "run", model, finch)
    options = LesionOptions(device="cpu")
    request = LesionRequest(runs=(str(run),))
    result, written = lesion_study(finch.path, tmp_path / "out", request, options)
    expected = lesion_comparison(finch, {ALL_GROUPS: run}, options)
    assert result.rows.equals(expected.rows)
    assert set(written) == {"json", "plot"} and written["plot"].is_file()
    payload = json.loads(written["json"].read_text())
    assert payload["rows"] == json.loads(json.dumps(lesion_json(expected)["rows"]))


def test_cli_compares_a_corpus_without_conditions(tmp_path) -> None:
    """`seqlm lesion --condition ''`: one day of song per bird (no lesion), held-out only;
    a condition column that does not exist is still one clear line and exit 2."""
    finch = small_finch_corpus(tmp_path / "finch", birds=(3,))
    model = tiny_gpt(seed=2, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    run = write_run(tmp_path / "run", model, finch)
    out = tmp_path / "out"
    args = ("lesion", str(finch.path), "--run", str(run), "--out", str(out))
    done = run_seqlm(*args, "--condition", "")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[all, pre] model is" in done.stdout and "[all, post]" not in done.stdout
    payload = json.loads((out / "lesion.json").read_text())
    assert {row["condition"] for row in payload["rows"]} == {"pre"}
    held = finch.index.filter(pl.col("split") == "held_out")
    model_rows = [r for r in payload["rows"] if r["model"] == "model" and r["group"] == "all"]
    assert model_rows[0]["tokens"] == int((held["length"] - 1).sum())
    missing = run_seqlm(*args, "--condition", "state")
    assert missing.returncode == 2 and "'state'" in missing.stderr


@pytest.mark.parametrize(
    ("existing", "replaced"),
    [
        ('{"my": "results"}', False),  # a user's file: refused, left as it was
        # seqlm's own lesion.json from before it said `written_by`: replaced
        ('{"runs": {"all": {"path": "/x/run", "step": 7}}, "ngram_orders": {"all": 4}}', True),
    ],
)
def test_an_existing_lesion_json_is_replaced_only_when_seqlm_wrote_it(
    tmp_path, existing: str, replaced: bool
) -> None:
    finch = small_finch_corpus(tmp_path / "finch", birds=(3,))
    model = tiny_gpt(seed=2, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    run = write_run(tmp_path / "run", model, finch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "lesion.json").write_text(existing)
    done = run_seqlm("lesion", str(finch.path), "--run", str(run), "--out", str(out))
    if replaced:
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads((out / "lesion.json").read_text())["written_by"] == "seqlm lesion"
    else:
        assert done.returncode == 2 and "seqlm did not write it" in done.stderr
        assert (out / "lesion.json").read_text() == existing
