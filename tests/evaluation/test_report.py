"""evaluate_run: the model beside its baselines on the same tokens; table, JSON, plots."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
from helpers.eval_fixtures import (  # noqa: F401 (autouse fixture)
    small_finch_corpus,
    tiny_gpt,
    write_run,
)
from rich.console import Console

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.report import (
    EvalOptions,
    check_same_targets,
    compare_scores,
    default_lstm_folder,
    eval_json,
    evaluate_run,
    parse_baselines,
    summary_table,
    write_report,
)
from seqlm.evaluation.scores import TokenScores


@pytest.fixture(scope="module")
def finch(tmp_path_factory):
    return small_finch_corpus(tmp_path_factory.mktemp("report") / "finch", birds=(2, 3))


@pytest.fixture(scope="module")
def run(finch, tmp_path_factory):
    model = tiny_gpt(seed=3, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    return write_run(tmp_path_factory.mktemp("report") / "run", model, finch)


def test_the_model_and_baselines_are_scored_on_the_same_tokens(finch, run) -> None:
    evaluation = evaluate_run(run, finch, EvalOptions(device="cpu"))
    best_name = f"best n-gram ({evaluation.info['baselines']['ngram']['best_order']}-gram KN)"
    assert evaluation.models == ["model", "uniform", "unigram", best_name, "per-group n-gram"]
    assert set(evaluation.info["baselines"]["group_ngram"]["orders"]) == {"bird2", "bird3"}
    held_out = finch.split("held_out")
    assert evaluation.index["seq_id"].to_list() == held_out["seq_id"].to_list()
    n_targets = int((held_out["length"] - 1).sum())
    summary = {row["model"]: row for row in evaluation.summary.iter_rows(named=True)}
    for name, scores in evaluation.scores.items():
        assert len(scores) == n_targets
        assert summary[name]["tokens"] == n_targets
        assert summary[name]["perplexity"] == pytest.approx(np.exp(-scores.log_prob.mean()))
        assert summary[name]["ece"] == pytest.approx(evaluation.calibrations[name].ece)
    assert summary["uniform"]["perplexity"] == pytest.approx(finch.vocab_size - 2)
    # real song: the n-gram beats the unigram, which beats guessing
    assert (
        summary[best_name]["perplexity"]
        < summary["unigram"]["perplexity"]
        < (summary["uniform"]["perplexity"])
    )
    assert {"group", "condition", "kind", "position", "repeat"} <= set(evaluation.breakdowns)
    scoring = evaluation.info["scoring"]["model"]
    assert (scoring["context"], scoring["stride"]) == (32, 16)


def test_table_json_and_plots(finch, run, tmp_path) -> None:
    evaluation = evaluate_run(run, finch, EvalOptions(device="cpu", baselines=("uniform",)))
    table = summary_table(evaluation.summary, title="t")
    assert [c.header for c in table.columns] == ["metric", "model", "uniform"]
    columns = [list(c.cells) for c in table.columns]
    assert columns[0][1] == "perplexity"
    ppl_model, ppl_uniform = columns[1][1], columns[2][1]
    model_is_better = evaluation.summary["perplexity"][0] < evaluation.summary["perplexity"][1]
    assert ppl_model.startswith("[bold]") == model_is_better
    assert ppl_uniform.startswith("[bold]") != model_is_better
    console = Console(width=100, record=True)
    console.print(table)
    assert "perplexity" in console.export_text()

    written = write_report(evaluation, tmp_path / "out")
    assert set(written) == {"json", "reliability", "perplexity_by_group"}
    for name in ("reliability", "perplexity_by_group"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(written["json"].read_text())
    json.dumps(payload, allow_nan=False)  # no NaN anywhere: strict JSON
    assert payload["models"] == ["model", "uniform"]
    assert payload["scoring"]["model"]["min_context_after_first_window"] == 17
    assert {r["group"] for r in payload["breakdowns"]["group"]} == {"bird2", "bird3"}
    assert payload == json.loads(json.dumps(eval_json(evaluation) | {"plots": payload["plots"]}))


def test_lstm_baseline_is_trained_once_beside_the_run(finch, run) -> None:
    options = EvalOptions(
        device="cpu", baselines=("lstm",), lstm_train={"max_steps": 3, "eval_every": 3}
    )
    first = evaluate_run(run, finch, options)
    assert first.models == ["model", "LSTM"]
    assert first.info["baselines"]["lstm"]["trained_now"]
    assert first.info["baselines"]["lstm"]["step"] == 3
    assert (default_lstm_folder(run, finch) / "config.json").is_file()
    again = evaluate_run(run, finch, options)
    assert not again.info["baselines"]["lstm"]["trained_now"]
    np.testing.assert_array_equal(again.scores["LSTM"].log_prob, first.scores["LSTM"].log_prob)


def test_options_and_mismatches_are_reported() -> None:
    assert parse_baselines("ngram,lstm") == ("uniform", "unigram", "ngram", "lstm")
    assert parse_baselines("none") == ()
    with pytest.raises(ConfigError, match="transformer"):
        EvalOptions(baselines=("transformer",))
    ints, floats = np.array([0, 0]), np.array([-1.0, -2.0])
    top = np.array([0.5, 0.4])
    a = TokenScores(ints, np.array([1, 2]), np.array([5, 6]), ints, floats, ints, ints, top)
    b = dataclasses.replace(a, token=np.array([5, 7]))
    with pytest.raises(CorpusError, match="other tokens"):
        check_same_targets({"a": a, "b": b})
    evaluation = compare_scores(pl.DataFrame({"seq_id": [0]}), {"a": a, "c": a}, kinds=None)
    assert evaluation.summary["model"].to_list() == ["a", "c"]


def test_paired_comparisons_against_every_baseline(finch, run, tmp_path) -> None:
    evaluation = evaluate_run(run, finch, EvalOptions(device="cpu"))
    baselines = [c.baseline for c in evaluation.comparisons]
    assert baselines == evaluation.models[1:]
    by_name = {c.baseline: c for c in evaluation.comparisons}
    summary = {row["model"]: row for row in evaluation.summary.iter_rows(named=True)}
    uniform = by_name["uniform"].metrics["cross_entropy"]
    expected = summary["model"]["cross_entropy_nats"] - summary["uniform"]["cross_entropy_nats"]
    assert uniform.difference == pytest.approx(expected)
    assert uniform.low <= uniform.difference <= uniform.high
    # a random tiny GPT: the n-gram fitted on real song beats it beyond doubt
    best = by_name["per-group n-gram"]
    assert best.verdict == "worse" and "worse than per-group n-gram" in best.sentence()
    assert best.unit == "sequence" and best.units == evaluation.index.height
    # top-1 without EOS: the same mean as the token table gives for non-EOS targets
    table = evaluation.table.filter((pl.col("model") == "model") & (pl.col("token") != 2))
    assert summary["model"]["top1_no_eos"] == pytest.approx(table["top1"].mean())
    assert by_name["uniform"].metrics["top1_no_eos"].model == pytest.approx(table["top1"].mean())
    payload = json.loads(write_report(evaluation, tmp_path / "out")["json"].read_text())
    assert [c["baseline"] for c in payload["comparisons"]] == baselines
    assert payload["comparisons"][0]["metrics"]["top1"]["ci_low"] is not None


def test_a_mask_drops_targets_from_every_scorer_alike() -> None:
    rng = np.random.default_rng(0)
    n = 60
    sequence = np.repeat(np.arange(6), 10)
    base = TokenScores(
        sequence,
        np.tile(np.arange(1, 11), 6),
        np.tile([9, 5, 6, 7, 5, 6, 7, 5, 6, 2], 6),  # id 9 first: a conditioning token
        np.zeros(n, dtype=np.int64),
        -rng.uniform(0.1, 2.0, n),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.full(n, 0.5),
    )
    model = dataclasses.replace(base, log_prob=np.where(base.token == 9, -40.0, base.log_prob))
    index = pl.DataFrame({"seq_id": range(6), "entity": [f"e{i}" for i in range(6)]})
    evaluation = compare_scores(
        index, {"model": model, "ngram": base}, kinds=None, mask=base.token != 9
    )
    assert evaluation.summary["tokens"].to_list() == [54, 54]
    assert evaluation.summary["cross_entropy_nats"][0] == pytest.approx(
        evaluation.summary["cross_entropy_nats"][1]
    )
    assert evaluation.comparisons[0].verdict == "not distinguishable"
