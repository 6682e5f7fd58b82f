"""Paired bootstrap comparisons: values, coverage, resampling units, masks, top-1 without EOS."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from seqlm.errors import ConfigError
from seqlm.evaluation.paired import (
    BETTER,
    UNDECIDED,
    WORSE,
    ComparisonOptions,
    best_baseline,
    compare_with_baselines,
    comparisons_frame,
    paired_comparison,
    resampling_units,
)
from seqlm.evaluation.scores import TokenScores
from seqlm.vocabularies.scheme import EOS_ID


def make_scores(sequence, log_prob, hit=None, token=None) -> TokenScores:
    """Scores with a given log-probability per target; `hit` True = ranked first."""
    sequence = np.asarray(sequence, dtype=np.int64)
    n = sequence.shape[0]
    hit = np.ones(n, dtype=bool) if hit is None else np.asarray(hit, dtype=bool)
    token = np.full(n, 7, dtype=np.int64) if token is None else np.asarray(token, np.int64)
    return TokenScores(
        sequence=sequence,
        position=np.arange(n, dtype=np.int64) + 1,
        token=token,
        previous=np.full(n, 1, dtype=np.int64),
        log_prob=np.asarray(log_prob, dtype=np.float64),
        n_greater=np.where(hit, 0, 3).astype(np.int64),
        n_tied=np.zeros(n, dtype=np.int64),
        max_prob=np.full(n, 0.5),
    )


def test_a_constant_shift_gives_that_difference_with_a_zero_width_interval():
    rng = np.random.default_rng(1)
    sequence = np.repeat(np.arange(40), 25)
    base = -rng.uniform(0.5, 2.0, sequence.size)
    result = paired_comparison(
        make_scores(sequence, base + 0.1), make_scores(sequence, base), names=("gpt", "ngram")
    )
    ce = result.metrics["cross_entropy"]
    assert ce.difference == pytest.approx(-0.1)
    assert ce.low == pytest.approx(-0.1) and ce.high == pytest.approx(-0.1)
    assert ce.model == pytest.approx(-(base + 0.1).mean())
    assert result.verdict == BETTER
    assert result.units == 40 and result.unit == "sequence"
    assert "gpt is better than ngram" in result.sentence()
    worse = paired_comparison(make_scores(sequence, base - 0.1), make_scores(sequence, base))
    assert worse.verdict == WORSE
    assert "model is worse than baseline" in worse.sentence()


def test_top1_difference_is_in_accuracy_units():
    sequence = np.repeat(np.arange(10), 10)
    hits_model = np.tile([True] * 6 + [False] * 4, 10)
    hits_base = np.tile([True] * 3 + [False] * 7, 10)
    zeros = np.zeros(100)
    result = paired_comparison(
        make_scores(sequence, zeros, hits_model), make_scores(sequence, zeros, hits_base)
    )
    top1 = result.metrics["top1"]
    assert (top1.model, top1.baseline) == (pytest.approx(0.6), pytest.approx(0.3))
    assert top1.difference == pytest.approx(0.3) and top1.verdict == BETTER
    assert result.metrics["cross_entropy"].verdict == UNDECIDED  # identical losses
    assert "+30.00 [+30.00, +30.00] pts" in top1.interval_text()


def test_top1_without_eos_leaves_out_eos_targets():
    sequence = np.repeat(np.arange(20), 5)
    token = np.tile([5, 6, 7, 8, EOS_ID], 20)
    model_hit = token == EOS_ID  # right only at the end of each sequence
    base_hit = token == 5
    zeros = np.zeros(100)
    result = paired_comparison(
        make_scores(sequence, zeros, model_hit, token),
        make_scores(sequence, zeros, base_hit, token),
    )
    assert result.metrics["top1"].difference == pytest.approx(0.0)
    no_eos = result.metrics["top1_no_eos"]
    assert no_eos.model == pytest.approx(0.0) and no_eos.baseline == pytest.approx(0.25)
    assert no_eos.tokens == 80 and no_eos.verdict == WORSE


def test_masked_targets_count_in_no_metric():
    sequence = np.repeat(np.arange(30), 4)
    base = np.full(120, -1.0)
    model = base + 0.2
    conditioning = np.tile([True, False, False, False], 30)
    model[conditioning] = -50.0  # awful on the prefix, which is context only
    result = paired_comparison(
        make_scores(sequence, model), make_scores(sequence, base), mask=~conditioning
    )
    ce = result.metrics["cross_entropy"]
    assert ce.difference == pytest.approx(-0.2) and ce.tokens == 90
    with pytest.raises(ConfigError, match="mask"):
        paired_comparison(make_scores(sequence, model), make_scores(sequence, base), mask=[True])


def _one_dataset(rng: np.random.Generator, units: int, true_difference: float):
    """Per-unit effects plus token noise; every unit has the same number of tokens, so the
    token-weighted mean difference has expectation `true_difference`."""
    tokens = 12
    sequence = np.repeat(np.arange(units), tokens)
    unit_effect = rng.normal(0.0, 0.3, units)[sequence]
    base = -rng.uniform(0.5, 2.0, sequence.size)
    model = base - true_difference - unit_effect - rng.normal(0.0, 0.5, sequence.size)
    return make_scores(sequence, model), make_scores(sequence, base)


def test_intervals_cover_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(2026)
    true_difference, trials, covered = 0.05, 200, 0
    options = ComparisonOptions(resamples=400, seed=3)
    for _ in range(trials):
        model, base = _one_dataset(rng, 50, true_difference)
        ce = paired_comparison(model, base, options=options).metrics["cross_entropy"]
        covered += ce.low <= true_difference <= ce.high
    # binomial(200, 0.95) lies in [0.90, 0.985] with > 99% probability; a percentile
    # bootstrap with 50 units runs slightly narrow, hence the lower bound
    assert 0.88 <= covered / trials <= 0.99


def test_entities_with_several_sequences_are_resampled_whole():
    index = pl.DataFrame({"seq_id": range(6), "entity": ["a", "a", "b", "b", "c", "d"]})
    units, name = resampling_units(index)
    assert name == "entity" and units.tolist() == ["a", "a", "b", "b", "c", "d"]
    single = pl.DataFrame({"seq_id": range(3), "entity": ["a", "b", "c"]})
    assert resampling_units(single)[1] == "sequence"
    assert resampling_units(single.drop("entity"))[0].tolist() == [0, 1, 2]


def test_resampling_by_entity_widens_the_interval_when_sequences_share_an_entity():
    rng = np.random.default_rng(5)
    entities, per_entity, tokens = 20, 10, 10
    sequence = np.repeat(np.arange(entities * per_entity), tokens)
    entity_of_sequence = np.repeat(np.arange(entities), per_entity)
    effect = rng.normal(0.0, 0.5, entities)[entity_of_sequence][sequence]
    base = np.full(sequence.size, -1.0)
    model = base + 0.02 + effect + rng.normal(0, 0.1, sequence.size)
    scores = {"model": make_scores(sequence, model), "base": make_scores(sequence, base)}
    by_sequence = compare_with_baselines(scores, "model", np.arange(entities * per_entity))[0]
    by_entity = compare_with_baselines(scores, "model", entity_of_sequence, unit="entity")[0]
    width = {
        name: c.metrics["cross_entropy"].high - c.metrics["cross_entropy"].low
        for name, c in (("sequence", by_sequence), ("entity", by_entity))
    }
    assert by_entity.units == entities and by_sequence.units == entities * per_entity
    # correlated sequences: resampling them one by one would understate the spread ~3x
    assert width["entity"] > 2.0 * width["sequence"]
    assert by_entity.metrics["cross_entropy"].difference == pytest.approx(
        by_sequence.metrics["cross_entropy"].difference
    )


def test_several_baselines_share_draws_and_the_best_is_the_lowest_cross_entropy():
    rng = np.random.default_rng(9)
    sequence = np.repeat(np.arange(30), 10)
    base = -rng.uniform(0.5, 1.5, 300)
    scores = {
        "model": make_scores(sequence, base),
        "weak": make_scores(sequence, base - 0.5),
        "strong": make_scores(sequence, base + rng.normal(0, 0.05, 300)),
    }
    comparisons = compare_with_baselines(scores, "model", np.arange(30))
    assert [c.baseline for c in comparisons] == ["weak", "strong"]
    assert best_baseline(comparisons).baseline == "strong"
    assert comparisons[0].verdict == BETTER
    frame = comparisons_frame(comparisons)
    assert frame.height == 8
    assert set(frame["metric"]) == {"cross_entropy", "top1", "top1_no_eos", "top10"}
    assert comparisons[0].to_dict()["metrics"]["cross_entropy"]["ci_high"] < 0


def test_same_seed_same_interval_and_bad_options_refused():
    model, base = _one_dataset(np.random.default_rng(0), 30, 0.0)
    first = paired_comparison(model, base, options=ComparisonOptions(seed=4))
    second = paired_comparison(model, base, options=ComparisonOptions(seed=4))
    assert first.metrics["cross_entropy"] == second.metrics["cross_entropy"]
    with pytest.raises(ConfigError):
        ComparisonOptions(resamples=10)
    with pytest.raises(ConfigError):
        ComparisonOptions(confidence=1.0)
    other = dataclasses.replace(base, token=base.token + 1)
    with pytest.raises(ConfigError, match="other targets"):
        paired_comparison(model, other)


def test_top10_is_compared_with_an_interval():
    """Issue 13 asks for top-10 beside the baselines with CIs (the MIMIC target)."""
    import dataclasses

    sequence = np.repeat(np.arange(40), 5)
    model = make_scores(sequence, np.full(200, -1.0))  # every target ranked first
    ranks = np.where(np.arange(200) % 2 == 0, 0, 20)  # half the targets outside the top 10
    baseline = dataclasses.replace(model, n_greater=ranks.astype(np.int64))
    (comparison,) = compare_with_baselines(
        {"model": model, "baseline": baseline}, "model", np.arange(40)
    )
    top10 = comparison.metrics["top10"]
    assert top10.model == pytest.approx(1.0) and top10.baseline == pytest.approx(0.5)
    assert top10.low <= top10.difference <= top10.high and top10.low > 0
    assert top10.tokens == 200
