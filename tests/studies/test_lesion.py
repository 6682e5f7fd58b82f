"""The lesion comparison on real finch song (the bundled Koparkar et al. 2024 data)."""

from __future__ import annotations

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
from seqlm.evaluation.baselines import BaselineOptions, fit_baselines
from seqlm.evaluation.calibration import fit_temperature
from seqlm.evaluation.lstm import run_finished
from seqlm.evaluation.model_scorer import ModelScorer
from seqlm.studies.lesion import (
    ALL_GROUPS,
    MODEL,
    NGRAM,
    NO_CONDITION,
    PER_GROUP_NGRAM,
    LesionOptions,
    lesion_comparison,
    lesion_comparison_lines,
    lesion_table,
    lesion_wide,
    run_lesion_experiment,
    write_lesion_report,
)
from seqlm.training.config import resolve_settings


@pytest.fixture(scope="module")
def finch(tmp_path_factory):
    # bird1 and bird6 change most after the lesion (README: post 3.36 and 2.9)
    return small_finch_corpus(tmp_path_factory.mktemp("lesion") / "finch", birds=(1, 6))


def ngram_perplexity(corpus, bird: str, rows: pl.DataFrame) -> float:
    """The per-bird n-gram computed directly: fitted on the bird's pre-lesion train."""
    index = corpus.index.filter((pl.col("group") == bird) & (pl.col("condition") == "pre"))
    take = lambda frame: [np.asarray(corpus.sequence(int(i))) for i in frame["seq_id"]]  # noqa: E731
    train = take(index.filter(pl.col("split") == "train"))
    tuning = take(index.filter(pl.col("split") == "tuning"))
    options = BaselineOptions(ngram_orders=(), include_uniform=False, include_unigram=False)
    ngram = fit_baselines(train, corpus.vocab_size, tuning, options).scorers[-1]
    return float(np.exp(-ngram.score(take(rows)).log_prob.mean()))


def test_per_bird_perplexities_side_by_side(finch, tmp_path) -> None:
    model = tiny_gpt(seed=1, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    run = write_run(tmp_path / "run", model, finch)
    result = lesion_comparison(finch, {ALL_GROUPS: run}, LesionOptions(device="cpu"))
    assert result.models == [MODEL, NGRAM, PER_GROUP_NGRAM]
    rows = result.rows
    assert set(rows["group"]) == {"bird1", "bird6", ALL_GROUPS}
    assert rows.height == 3 * 3 * 2  # groups x models x conditions
    index = finch.index
    for bird in ("bird1", "bird6"):
        held = index.filter(
            (pl.col("group") == bird)
            & (pl.col("condition") == "pre")
            & (pl.col("split") == "held_out")
        )
        post = index.filter((pl.col("group") == bird) & (pl.col("condition") == "post"))
        mine = rows.filter((pl.col("group") == bird) & (pl.col("model") == PER_GROUP_NGRAM))
        pre_row = mine.filter(pl.col("condition") == "pre").row(0, named=True)
        post_row = mine.filter(pl.col("condition") == "post").row(0, named=True)
        assert pre_row["tokens"] == int((held["length"] - 1).sum())
        assert post_row["tokens"] == int((post["length"] - 1).sum())  # all post bouts
        assert pre_row["perplexity"] == pytest.approx(ngram_perplexity(finch, bird, held))
        assert post_row["perplexity"] == pytest.approx(ngram_perplexity(finch, bird, post))
        # the lesion's effect on these birds: post-lesion song is much less predictable
        assert post_row["perplexity"] > 1.5 * pre_row["perplexity"]
    # `all` pools tokens: exp of the token-weighted mean cross-entropy
    for (model, condition), part in rows.filter(pl.col("group") != ALL_GROUPS).group_by(
        ["model", "condition"]
    ):
        pooled = rows.filter(
            (pl.col("group") == ALL_GROUPS)
            & (pl.col("model") == model)
            & (pl.col("condition") == condition)
        ).row(0, named=True)
        weighted = (part["tokens"] * part["cross_entropy_nats"]).sum() / part["tokens"].sum()
        assert pooled["perplexity"] == pytest.approx(np.exp(weighted))

    wide = lesion_wide(result)
    assert wide["group"].to_list() == ["bird1", "bird6", ALL_GROUPS]
    assert f"{NGRAM} post/pre" in wide.columns
    console = Console(width=200, record=True)
    console.print(lesion_table(result))
    assert "bird6" in console.export_text()
    written = write_lesion_report(result, tmp_path / "out")
    assert written["plot"].read_bytes()[:4] == b"\x89PNG"
    payload = json.loads(written["json"].read_text())
    assert payload["setting"] == "one model for all groups" and len(payload["rows"]) == 18
    # the model against each n-gram, with intervals, on held-out pre and on post song
    pooled_runs = [c for c in payload["comparisons"] if c["run"] == ALL_GROUPS]
    comparisons = {(c["condition"], c["baseline"]): c for c in pooled_runs}
    assert set(comparisons) == {(c, m) for c in ("pre", "post") for m in (NGRAM, PER_GROUP_NGRAM)}
    # and per bird: the one model against that bird's own n-gram, on its sequences
    for c in payload["comparisons"]:
        if c["run"] == ALL_GROUPS:
            continue
        assert c["run"] in ("bird1", "bird6") and c["baseline"] == PER_GROUP_NGRAM
        mine = rows.filter((pl.col("group") == c["run"]) & (pl.col("condition") == c["condition"]))
        ce = dict(zip(mine["model"], mine["cross_entropy_nats"], strict=True))
        difference = c["metrics"]["cross_entropy"]["difference"]
        assert difference == pytest.approx(ce[MODEL] - ce[PER_GROUP_NGRAM])
    assert len(payload["comparisons"]) == len(pooled_runs) + 2 * 2  # birds x conditions
    pooled = rows.filter((pl.col("group") == ALL_GROUPS) & (pl.col("condition") == "pre"))
    ce = dict(zip(pooled["model"], pooled["cross_entropy_nats"], strict=True))
    pre_ngram = comparisons[("pre", NGRAM)]["metrics"]["cross_entropy"]
    assert pre_ngram["difference"] == pytest.approx(ce[MODEL] - ce[NGRAM])
    assert pre_ngram["ci_low"] <= pre_ngram["difference"] <= pre_ngram["ci_high"]
    assert comparisons[("pre", NGRAM)]["verdict"] == "worse"  # a random tiny model
    lines = lesion_comparison_lines(result)
    assert any(line.startswith("[all, pre] model is worse than n-gram") for line in lines)


def test_one_command_trains_on_pre_lesion_song_per_bird(finch, tmp_path) -> None:
    settings = resolve_settings(
        sets=["model.context=32", "train.steps=3", "train.batch=4", "train.eval_batches=1"],
        preset="tiny",
    )
    options = LesionOptions(device="cpu")
    result = run_lesion_experiment(
        finch.path, tmp_path / "lesion", settings=settings, per_group=True, options=options
    )
    assert result.info["setting"] == "one model per group"
    assert result.models == [MODEL, NGRAM]  # per bird, the n-gram is already per bird
    for bird in ("bird1", "bird6"):
        pre = tmp_path / "lesion" / f"pre-{bird}"
        assert set(pl.read_parquet(pre / "index.parquet")["condition"]) == {"pre"}
        assert set(pl.read_parquet(pre / "index.parquet")["group"]) == {bird}
        assert run_finished(tmp_path / "lesion" / f"run-{bird}")
    assert (tmp_path / "lesion" / "lesion.png").is_file()
    # a second call re-scores the finished runs instead of training again
    weights = tmp_path / "lesion" / "run-bird1" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_lesion_experiment(
        finch.path, tmp_path / "lesion", settings=settings, per_group=True, options=options
    )
    assert weights.stat().st_mtime_ns == before
    assert again.rows.equals(result.rows)


def test_per_bird_runs_are_pooled_against_the_per_bird_ngrams(finch, tmp_path) -> None:
    """One model per bird: besides each bird's interval, one over all birds' held-out
    sequences, each bird scored by its own model against its own n-gram."""
    runs = {}
    for seed, bird in enumerate(("bird1", "bird6")):
        model = tiny_gpt(seed=seed, vocab_size=finch.vocab_size, block_size=32)
        runs[bird] = write_run(tmp_path / bird, model, finch)
    result = lesion_comparison(finch, runs, LesionOptions(device="cpu"))
    found = {(c["run"], c["condition"], c["baseline"]): c for c in result.info["comparisons"]}
    assert set(found) == {
        (run, condition, baseline)
        for run, baseline in (("bird1", NGRAM), ("bird6", NGRAM), (ALL_GROUPS, PER_GROUP_NGRAM))
        for condition in ("pre", "post")
    }
    rows = result.rows.filter(pl.col("group") == ALL_GROUPS)
    for condition in ("pre", "post"):
        ce = dict(
            rows.filter(pl.col("condition") == condition)
            .select("model", "cross_entropy_nats")
            .iter_rows()
        )
        pooled = found[(ALL_GROUPS, condition, PER_GROUP_NGRAM)]["metrics"]["cross_entropy"]
        # the `all` n-gram row pools the per-bird n-grams, as the interval does
        assert pooled["difference"] == pytest.approx(ce[MODEL] - ce[NGRAM])
        assert pooled["ci_low"] <= pooled["difference"] <= pooled["ci_high"]
    lines = lesion_comparison_lines(result)
    assert any(
        line.startswith(f"[all, pre] model is worse than {PER_GROUP_NGRAM}") for line in lines
    )


def test_a_corpus_without_conditions_compares_held_out_song_only(finch, tmp_path) -> None:
    model = tiny_gpt(vocab_size=finch.vocab_size, block_size=32)
    run = write_run(tmp_path / "run", model, finch)
    options = LesionOptions(condition=NO_CONDITION, device="cpu")
    result = lesion_comparison(finch, {"bird1": run, "bird6": run}, options)
    assert set(result.rows["condition"]) == {"pre"}  # every sequence counts as pre
    held = finch.index.filter(pl.col("split") == "held_out")
    pooled = result.rows.filter((pl.col("group") == ALL_GROUPS) & (pl.col("model") == MODEL))
    assert pooled["tokens"].to_list() == [int((held["length"] - 1).sum())]
    assert {c["condition"] for c in result.info["comparisons"]} == {"pre"}
    assert lesion_wide(result)[f"{MODEL} post"].is_null().all()
    write_lesion_report(result, tmp_path / "out")  # the plot copes with no post bars
    # a named condition column that is missing is still an error
    with pytest.raises(CorpusError, match="'state'"):
        lesion_comparison(finch, {ALL_GROUPS: run}, LesionOptions(condition="state"))


def test_missing_columns_and_runs_are_reported(finch, tmp_path) -> None:
    with pytest.raises(ConfigError):
        lesion_comparison(finch, {})
    model = tiny_gpt(vocab_size=finch.vocab_size)
    run = write_run(tmp_path / "run", model, finch)
    with pytest.raises(CorpusError, match="'state'"):
        lesion_comparison(finch, {ALL_GROUPS: run}, LesionOptions(condition="state"))
    with pytest.raises(CorpusError, match="held-out"):
        lesion_comparison(finch, {"bird9": run})


@pytest.mark.slow
def test_all_seven_birds_match_the_published_reference(tmp_path, finch_lesions) -> None:
    """README reference: per-bird 4-gram, held-out pre 1.21-1.61, post 1.59-3.36."""
    from seqlm.ingest import ingest

    corpus = ingest("birdsong-strings", [finch_lesions], tmp_path / "finch")
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=32)
    run = write_run(tmp_path / "run", model, corpus)
    result = lesion_comparison(corpus, {ALL_GROUPS: run}, LesionOptions(device="cpu"))
    ngram = lesion_wide(result).filter(pl.col("group") != ALL_GROUPS)
    assert ngram.height == 7
    pre, post = ngram[f"{PER_GROUP_NGRAM} pre"], ngram[f"{PER_GROUP_NGRAM} post"]
    assert pre.min() > 1.1 and pre.max() < 1.75
    assert post.min() > 1.5 and post.max() < 3.6
    assert (post > pre).all()


def test_a_temperature_is_fitted_on_the_tuning_split_before_scoring(finch, tmp_path) -> None:
    """One temperature per run, fitted on the pre-lesion tuning song of the birds it
    covers (never on the scored held-out or post song); the held-out scores are the
    model's at that temperature, and lesion.json records the fit."""
    model = tiny_gpt(seed=1, vocab_size=finch.vocab_size, block_size=32, init_std=0.5)
    run = write_run(tmp_path / "run", model, finch)
    runs = {"bird1": run, "bird6": run}
    calibrated = lesion_comparison(finch, runs, LesionOptions(device="cpu"))
    plain = lesion_comparison(finch, runs, LesionOptions(device="cpu", calibrate_on_tuning=False))
    assert "temperature_fit" not in plain.info
    fits = calibrated.info["temperature_fit"]
    assert set(fits) == {"bird1", "bird6"}
    for bird, fit in fits.items():
        tuning = finch.index.filter(
            (pl.col("group") == bird)
            & (pl.col("condition") == "pre")
            & (pl.col("split") == "tuning")
        )
        sequences = [np.asarray(finch.sequence(int(i))) for i in tuning["seq_id"]]
        scorer = ModelScorer(model, device="cpu")
        logits, true_ids = scorer.target_logits(sequences)
        assert fit == {
            **fit_temperature(logits, true_ids).to_dict(),
            "sequences": tuning.height,
            "sentence": fit["sentence"],
        }
        assert fit["nll_after"] < fit["nll_before"] and fit["temperature"] != 1.0
        held = finch.index.filter(
            (pl.col("group") == bird)
            & (pl.col("condition") == "pre")
            & (pl.col("split") == "held_out")
        )
        scorer.temperature = fit["temperature"]
        expected = scorer.score([np.asarray(finch.sequence(int(i))) for i in held["seq_id"]])
        row = calibrated.rows.filter(
            (pl.col("group") == bird) & (pl.col("model") == MODEL) & (pl.col("condition") == "pre")
        ).row(0, named=True)
        assert row["cross_entropy_nats"] == pytest.approx(-expected.log_prob.mean())
        assert any(
            line.startswith(f"[{bird}] temperature") for line in lesion_comparison_lines(calibrated)
        )
    ngram = lambda r: r.filter(pl.col("model") == NGRAM)["perplexity"].to_list()  # noqa: E731
    assert ngram(calibrated.rows) == ngram(plain.rows)  # the baselines are untouched
