"""The interpretation gate: reasons from the tuning curve, from a saved evaluation, and
from a comparison computed on the spot for a deliberately bad (one-step) run."""

from __future__ import annotations

import json

import pytest
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run

from seqlm.analysis.trust import (
    TrustOptions,
    comparison_reason,
    interpretation_check,
    training_reasons,
)
from seqlm.evaluation.report import EvalOptions, evaluate_run, write_report


def test_a_falling_curve_gives_no_reason():
    assert training_reasons([(100, 1.2), (200, 1.0), (300, 0.9), (400, 0.92)]) == []
    assert training_reasons([(100, 1.2)]) == []  # one evaluation: nothing to judge


def test_best_at_the_first_evaluation_and_a_rising_curve_are_reasons():
    reasons = training_reasons([(300, 0.94), (600, 0.97), (900, 1.05), (1200, 1.02)])
    shorts = [r.short for r in reasons]
    assert shorts == [
        "best tuning loss at the first evaluation",
        "tuning loss rose for most of training",
    ]
    assert "step 300, the first of 4 evaluations" in reasons[0].detail
    assert "rose in 2 of 3 intervals" in reasons[1].detail
    # rising for most of training although the first evaluation was not the best
    late = training_reasons([(1, 2.0), (2, 1.0), (3, 1.1), (4, 1.2), (5, 1.3)])
    assert [r.short for r in late] == ["tuning loss rose for most of training"]


def _comparison(verdict: str, low: float, high: float) -> dict:
    return {
        "baseline": "best n-gram (8-gram KN)",
        "verdict": verdict,
        "confidence": 0.95,
        "units": 212,
        "resampled_by": "sequence",
        "metrics": {
            "cross_entropy": {
                "model": 0.31,
                "baseline": 0.32,
                "difference": (low + high) / 2,
                "ci_low": low,
                "ci_high": high,
            }
        },
    }


def test_only_a_model_better_than_the_best_baseline_passes():
    assert comparison_reason(_comparison("better", -0.02, -0.005), "held_out") is None
    undecided = comparison_reason(_comparison("not distinguishable", -0.01, 0.004), "held_out")
    assert undecided.short == "not better than best n-gram (8-gram KN) on held-out data"
    assert "not distinguishable from best n-gram" in undecided.detail
    assert "[-0.0100, +0.0040] over 212 sequences" in undecided.detail
    worse = comparison_reason(_comparison("worse", 0.01, 0.03), "held_out")
    assert "worse than best n-gram" in worse.detail


@pytest.fixture(scope="module")
def finch(tmp_path_factory):
    return small_finch_corpus(tmp_path_factory.mktemp("trust") / "finch", birds=(2, 3))


def _metrics(run, losses):
    lines = [
        json.dumps({"kind": "eval", "step": 10 * (i + 1), "loss": v}) for i, v in enumerate(losses)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_the_gate_fires_on_a_barely_trained_model(finch, tmp_path):
    run = write_run(tmp_path / "run", tiny_gpt(vocab_size=finch.vocab_size, init_std=0.02), finch)
    _metrics(run, [3.2])
    report = interpretation_check(run, finch, TrustOptions(max_tokens=3000))
    assert not report.trusted
    assert report.reasons[0].short.startswith("not better than")
    assert report.comparison["verdict"] == "worse"
    assert "n-gram" in report.comparison["baseline"]  # the strongest baseline
    assert "compared now on" in report.source and "tokens" in report.source
    assert report.caption().startswith("CAUTION, do not interpret: not better than")
    assert any("does not beat the best baseline" in line for line in report.lines())


def test_a_saved_evaluation_is_read_and_a_good_one_stays_silent(finch, tmp_path):
    run = write_run(tmp_path / "run", tiny_gpt(vocab_size=finch.vocab_size, init_std=0.02), finch)
    _metrics(run, [3.0, 2.0, 1.5, 1.4])
    evaluation = evaluate_run(run, finch, EvalOptions(device="cpu"))
    written = write_report(evaluation, run / "eval" / "finch-held_out")
    report = interpretation_check(run, finch)
    assert str(written["json"]) in report.source
    assert not report.trusted  # a random model: the saved comparison says worse
    # the same saved evaluation, had the model won: nothing to warn about
    payload = json.loads(written["json"].read_text())
    for comparison in payload["comparisons"]:
        comparison["verdict"] = "better"
    written["json"].write_text(json.dumps(payload))
    quiet = interpretation_check(run, finch)
    assert quiet.trusted and quiet.caption() == "" and quiet.lines() == []
    # an evaluation of other weights (another step) is not used
    payload["run"]["step"] = 123
    written["json"].write_text(json.dumps(payload))
    assert "compared now" in interpretation_check(run, finch, TrustOptions(max_tokens=2000)).source


def test_the_caution_is_written_above_a_figure():
    from seqlm.analysis.figures import add_caution
    from seqlm.plotting import subplots

    figure, _ = subplots()
    add_caution(figure, "")
    assert figure.texts == []
    add_caution(figure, "CAUTION, do not interpret: x")
    assert [t.get_text() for t in figure.texts] == ["CAUTION, do not interpret: x"]
    assert figure.texts[0].get_position()[1] > 1.0  # above the axes, not over the data


@pytest.fixture(scope="module")
def copy_corpus(tmp_path_factory):
    """300 sequences of 30 symbols in which each symbol from the sixth on repeats the one
    five places back: structure a trained GPT finds and the baselines mostly miss."""
    import numpy as np
    import polars as pl
    from helpers.corpus_helpers import ingested

    from seqlm.corpus import SplitConfig, build_corpus
    from seqlm.vocabularies import TokenScheme

    rng = np.random.default_rng(0)
    rows = []
    for entity in range(300):
        symbols = rng.integers(0, 6, size=30)
        for t in range(5, 30):
            symbols[t] = symbols[t - 5]
        rows += [(f"e{entity:03d}", float(t), "abcdef"[v]) for t, v in enumerate(symbols)]
    frame = pl.DataFrame(rows, schema=["entity", "time", "code"], orient="row")
    return build_corpus(
        ingested(frame.with_columns(kind=pl.lit("syllable"))),
        tmp_path_factory.mktemp("copy") / "corpus",
        TokenScheme(value_mode="ignore"),
        SplitConfig(seed=0, tuning=0.15, held_out=0.2),
    )


def _train(corpus, out, steps: int):
    from seqlm.training.config import RunSettings, TrainConfig
    from seqlm.training.session import train_on_corpus

    train = TrainConfig(
        max_steps=steps,
        batch_size=16,
        lr=1e-2,
        warmup_steps=min(10, steps),
        eval_every=50,
        eval_batches=4,
        checkpoint_every=1000,
        log_every=50,
        cpu_threads=1,
    )
    settings = RunSettings(preset="tiny", model={"block_size": 32}, train=train)
    train_on_corpus(corpus.path, out, settings)
    return out


def test_the_gate_fires_on_a_model_trained_one_step(copy_corpus, tmp_path):
    run = _train(copy_corpus, tmp_path / "run", steps=1)
    report = interpretation_check(run, copy_corpus)
    assert not report.trusted
    assert report.reasons[0].short.startswith("not better than")
    assert report.comparison["verdict"] in ("worse", "not distinguishable")


@pytest.mark.slow
def test_the_gate_is_silent_for_a_model_that_beats_every_baseline(copy_corpus, tmp_path):
    run = _train(copy_corpus, tmp_path / "run", steps=300)  # ~40 s on one busy core
    report = interpretation_check(run, copy_corpus)
    assert report.trusted, report.lines()
    assert report.comparison["verdict"] == "better" and report.caption() == ""
