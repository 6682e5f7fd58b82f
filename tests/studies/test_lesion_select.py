"""Per bird, the fine-tuned run or the pool, chosen on the bird's tuning split (real
finch song from the bundled lesion data)."""

from __future__ import annotations

import json

import pytest
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run

from seqlm.evaluation.lstm import run_finished
from seqlm.studies.lesion import LesionOptions, lesion_comparison_lines, run_lesion_experiment
from seqlm.studies.lesion_select import FINE_TUNED, POOL, choose_fine_tuned_or_pool
from seqlm.training.config import resolve_settings


@pytest.fixture(scope="module")
def finch(tmp_path_factory):
    return small_finch_corpus(tmp_path_factory.mktemp("select") / "finch", birds=(3, 5))


@pytest.fixture(scope="module")
def runs(finch, tmp_path_factory):
    """A near-uniform model (small weights) and a confidently wrong one (large weights)."""
    folder = tmp_path_factory.mktemp("runs")
    calm = tiny_gpt(seed=1, vocab_size=finch.vocab_size, block_size=32, init_std=0.02)
    wild = tiny_gpt(seed=2, vocab_size=finch.vocab_size, block_size=32, init_std=1.0)
    return write_run(folder / "calm", calm, finch), write_run(folder / "wild", wild, finch)


def test_fine_tuned_run_kept_only_when_better_on_tuning(finch, runs) -> None:
    calm, wild = runs
    kept = choose_fine_tuned_or_pool("bird3", calm, wild, finch.path, device="cpu")
    assert kept.chosen == FINE_TUNED and kept.run == str(calm)
    assert kept.ce_difference == pytest.approx(kept.tuning_ce_fine_tuned - kept.tuning_ce_pool)
    assert kept.ci95[1] < 0 and kept.units > 5
    assert "better than the pool" in kept.sentence() and "kept" in kept.sentence()
    dropped = choose_fine_tuned_or_pool("bird3", wild, calm, finch.path, device="cpu")
    assert dropped.chosen == POOL and dropped.run == str(calm)
    assert dropped.ci95[0] > 0
    assert "not kept: the pool scores it" in dropped.sentence()
    # the same run on both sides is not better than itself: the pool is kept
    same = choose_fine_tuned_or_pool("bird3", calm, calm, finch.path, device="cpu")
    assert same.chosen == POOL and same.ce_difference == pytest.approx(0.0)


@pytest.mark.slow
def test_lesion_per_bird_from_pool_records_the_choice(finch, runs, tmp_path) -> None:
    calm, _ = runs
    settings = resolve_settings(
        sets=["train.steps=2", "train.batch=2", "train.eval_batches=1"], recipe=True
    )
    options = LesionOptions(device="cpu")
    out = tmp_path / "lesion"
    result = run_lesion_experiment(
        finch.path, out, settings=settings, per_group=True, options=options, init=calm
    )
    choices = result.info["fine_tune_choice"]
    assert set(choices) == {"bird3", "bird5"}
    for bird, choice in choices.items():
        assert run_finished(out / f"run-{bird}")
        expected = out / f"run-{bird}" if choice["chosen"] == FINE_TUNED else calm
        assert result.info["runs"][bird]["path"] == str(expected.resolve())
        assert choice["sentence"] in lesion_comparison_lines(result)
    written = json.loads((out / "lesion.json").read_text())
    assert set(written["fine_tune_choice"]) == {"bird3", "bird5"}
    # without the selection every bird is scored with its fine-tuned run
    plain = run_lesion_experiment(
        finch.path,
        out,
        settings=settings,
        per_group=True,
        options=options,
        init=calm,
        select_on_tuning=False,
    )
    assert "fine_tune_choice" not in plain.info
    for bird in ("bird3", "bird5"):
        assert plain.info["runs"][bird]["path"] == str((out / f"run-{bird}").resolve())
