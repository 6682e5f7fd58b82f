"""Token tables and their aggregations: values by hand, groupings, real finch data."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from helpers.finch_strings import BIRDS, bird_corpus

from seqlm.errors import ConfigError
from seqlm.evaluation.metrics import (
    breakdowns,
    position_bucket_labels,
    summarize,
    token_kinds,
    token_table,
)
from seqlm.evaluation.ngram import KneserNeyModel
from seqlm.evaluation.scores import TokenScores


def hand_scores() -> TokenScores:
    """Two sequences: [BOS] 5 5 2 and [BOS] 6 2 (targets 5 5 2 | 6 2)."""
    return TokenScores(
        sequence=np.array([0, 0, 0, 1, 1]),
        position=np.array([1, 2, 3, 1, 2]),
        token=np.array([5, 5, 2, 6, 2]),
        previous=np.array([1, 5, 5, 1, 6]),
        log_prob=np.log([0.5, 0.8, 0.25, 0.1, 0.5]),
        n_greater=np.array([0, 0, 1, 6, 0]),
        n_tied=np.array([0, 0, 1, 0, 0]),
        max_prob=np.array([0.5, 0.8, 0.5, 0.4, 0.5]),
    )


def test_token_kinds_follow_the_token_scheme() -> None:
    tokens = [
        "[PAD]",
        "[BOS]",
        "[EOS]",
        "[UNK]",
        "[SEP]",
        "LAB//51003//ng/mL//Q3",
        "LAB//[UNK]",
        "[TIME//5m-15m]",
        "VALUE//Q7",
        "MEDS_BIRTH",
        "syllable//[UNK]",
    ]
    assert token_kinds(tokens, plain_kind="syllable") == [
        "special",
        "special",
        "special",
        "UNK",
        "special",
        "LAB",
        "LAB",
        "TIME",
        "VALUE",
        "syllable",
        "syllable",
    ]
    # Without a plain kind: the only per-kind unknown names it, else `event`.
    assert token_kinds(["[UNK]", "syllable//[UNK]", "a"])[2] == "syllable"
    assert token_kinds(["LAB//[UNK]", "DIAGNOSIS//[UNK]", "MEDS_BIRTH"])[2] == "event"


def test_position_bucket_labels() -> None:
    assert position_bucket_labels((1, 2, 4, 8)) == ["1", "2-3", "4-7", "8+"]


def test_token_table_columns_and_index_rows() -> None:
    index = pl.DataFrame({"seq_id": [10, 11], "group": ["bird1", "bird2"], "split": ["a", "b"]})
    kinds = token_kinds(["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]", "x", "y"], "syllable")
    table = token_table(hand_scores(), index, kinds, model="m", position_edges=(1, 2, 4))
    assert table.columns[:2] == ["model", "sequence"]
    assert table["group"].to_list() == ["bird1"] * 3 + ["bird2"] * 2
    assert table["seq_id"].to_list() == [10, 10, 10, 11, 11]
    assert table["is_repeat"].to_list() == [False, True, False, False, False]
    assert table["kind"].to_list() == ["syllable", "syllable", "special", "syllable", "special"]
    assert table["position_bucket"].to_list() == ["1", "2-3", "2-3", "1", "2-3"]
    assert table["top1"].to_list() == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert table["top5"].to_list() == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_summaries_match_hand_computation() -> None:
    table = token_table(hand_scores())
    overall = summarize(table).row(0, named=True)
    nats = -np.mean(np.log([0.5, 0.8, 0.25, 0.1, 0.5]))
    assert overall["tokens"] == 5
    assert overall["cross_entropy_nats"] == pytest.approx(nats)
    assert overall["cross_entropy_bits"] == pytest.approx(nats / math.log(2))
    assert overall["perplexity"] == pytest.approx(math.exp(nats))
    assert overall["top1"] == pytest.approx(3 / 5)
    assert overall["top5"] == pytest.approx(4 / 5)
    assert overall["top10"] == pytest.approx(1.0)
    assert overall["mean_confidence"] == pytest.approx(np.mean([0.5, 0.8, 0.5, 0.4, 0.5]))
    by_repeat = summarize(table, ["is_repeat"])
    assert by_repeat["is_repeat"].to_list() == [False, True]
    assert by_repeat["tokens"].to_list() == [4, 1]
    assert by_repeat["perplexity"][1] == pytest.approx(1 / 0.8)


def test_breakdowns_skip_absent_columns_and_lead_with_the_model() -> None:
    index = pl.DataFrame({"split": ["held_out", "held_out"], "group": ["b1", "b2"]})
    tables = [token_table(hand_scores(), index, model=name) for name in ("a", "b")]
    result = breakdowns(pl.concat(tables))
    assert set(result) == {"overall", "split", "group", "position", "repeat"}
    assert result["overall"]["model"].to_list() == ["a", "b"]
    assert result["group"].columns[:2] == ["model", "group"]
    assert result["group"].height == 4


def test_errors_name_the_problem() -> None:
    table = token_table(hand_scores())
    with pytest.raises(ConfigError, match="no such column"):
        summarize(table, ["group"])
    with pytest.raises(ConfigError, match="index has 1 rows"):
        token_table(hand_scores(), pl.DataFrame({"group": ["x"]}))
    with pytest.raises(ConfigError, match="clash"):
        token_table(hand_scores(), pl.DataFrame({"token": [1, 2]}))
    with pytest.raises(ConfigError, match="position edges"):
        token_table(hand_scores(), position_edges=(2, 4))
    with pytest.raises(ConfigError, match="token kinds"):
        token_table(hand_scores(), kinds=["special"] * 3)


def test_finch_breakdown_by_bird_condition_and_repeat(finch_lesions) -> None:
    """Real song: one 4-gram per bird; per-bird perplexity from the table equals the
    model's own, post-lesion song is harder, and repeated syllables (trills) are far
    easier than the rest, which is why they are reported apart."""
    tables = []
    for bird in BIRDS:
        train, held_out, post, vocab_size = bird_corpus(finch_lesions, bird)
        model = KneserNeyModel.fit(train, vocab_size, 4)
        sequences = held_out + post
        index = pl.DataFrame(
            {
                "group": [f"bird{bird}"] * len(sequences),
                "condition": ["pre"] * len(held_out) + ["post"] * len(post),
            }
        )
        tables.append(token_table(model.score(sequences), index, model="4-gram"))
        pre_table = tables[-1].filter(pl.col("condition") == "pre")
        assert math.exp(-pre_table["log_prob"].mean()) == pytest.approx(
            model.perplexity(held_out), rel=1e-12
        )
    table = pl.concat(tables)
    result = breakdowns(table)
    assert result["group"].height == len(BIRDS)
    by_condition = {r["condition"]: r for r in result["condition"].iter_rows(named=True)}
    assert by_condition["post"]["perplexity"] > by_condition["pre"]["perplexity"]
    by_repeat = {r["is_repeat"]: r for r in result["repeat"].iter_rows(named=True)}
    assert by_repeat[True]["top1"] > by_repeat[False]["top1"]
    assert by_repeat[True]["tokens"] + by_repeat[False]["tokens"] == table.height
