"""benchmarks/bench_positions.py: two runs scored on the same held-out targets, their
paired difference and its bootstrap interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.benchmarks import load_benchmark
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run

from seqlm.evaluation.model_scorer import scorer_from_run


def _bench():
    return load_benchmark("bench_positions")


def test_two_runs_pair_on_the_same_targets(tmp_path: Path, capsys) -> None:
    bench = _bench()
    corpus = small_finch_corpus(tmp_path / "corpus")
    runs = {}
    for name, positions in (("alibi", "alibi"), ("rotary", "rotary"), ("same", "alibi")):
        seed = 0 if name != "rotary" else 1
        model = tiny_gpt(seed=seed, vocab_size=corpus.vocab_size, positions=positions)
        runs[name] = write_run(tmp_path / name, model, corpus)
    result = bench.compare_runs(corpus, runs, "held_out")
    first, same = result["comparisons"]
    assert (first["model"], first["baseline"], same["baseline"]) == ("alibi", "rotary", "same")
    info = result["runs"]
    assert info["alibi"]["positions"] == "alibi" and info["rotary"]["positions"] == "rotary"
    assert info["alibi"]["best_tuning_loss"] == 1.0  # write_run's best/ state
    ce = first["metrics"]["cross_entropy"]
    # the point difference is the difference of the two runs' own mean CEs
    assert ce["difference"] == pytest.approx(
        info["alibi"]["cross_entropy"] - info["rotary"]["cross_entropy"], abs=1e-9
    )
    assert ce["ci_low"] <= ce["difference"] <= ce["ci_high"]
    # ... and of what seqlm eval's scorer gives each run on the split
    from seqlm.evaluation.baselines import split_sequences

    _, sequences = split_sequences(corpus, "held_out")
    scorer, _ = scorer_from_run(runs["rotary"], device="cpu")
    assert info["rotary"]["cross_entropy"] == pytest.approx(
        float(np.mean(-scorer.score(sequences).log_prob)), abs=1e-9
    )
    # a run against a copy of itself: no difference, an interval of width 0
    for metric in ("cross_entropy", "top1"):
        m = same["metrics"][metric]
        assert m["difference"] == m["ci_low"] == m["ci_high"] == 0.0
        assert m["verdict"] == "not distinguishable"
    bench.print_result(result)
    printed = capsys.readouterr().out
    assert "alibi - rotary: alibi is" in printed and "95% CI over" in printed


def test_run_arguments() -> None:
    bench = _bench()
    runs = bench.parse_runs(["a=x/one", "y/two"])
    assert runs == {"a": Path("x/one"), "two": Path("y/two")}
    with pytest.raises(SystemExit, match="at least two"):
        bench.parse_runs(["a=x"])
    with pytest.raises(SystemExit, match="given twice"):
        bench.parse_runs(["a=x", "a=y"])
