"""Tables and files of the corpus statistics, and the figures drawn from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.analysis_helpers import (  # noqa: F401 (autouse fixture)
    event_corpus,
    random_gpt,
)
from PIL import Image

from seqlm.analysis.corpus_stats import (
    EXCLUSION_NOTE,
    AttentionStatsOptions,
    corpus_attention_statistics,
)
from seqlm.analysis.stats_plots import plot_mean_distance, write_stats_plots
from seqlm.analysis.stats_tables import (
    distance_table,
    head_table,
    mass_density,
    time_table,
    write_statistics,
)


@pytest.fixture(scope="module")
def small_stats(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(1)
    sequences = [list("abcdef")] + [list(rng.choice(list("abcdef"), 12)) for _ in range(5)]
    times = [[0.25 * i for i in range(len(s))] for s in sequences]
    corpus = event_corpus(folder / "corpus", sequences, times)
    model = random_gpt(seed=4, vocab_size=corpus.vocab_size, block_size=10)
    options = AttentionStatsOptions(beyond_distances=(1, 4), beyond_seconds=(0.3,))
    return corpus_attention_statistics(model, corpus, options)


def test_tables_are_long_form_with_stated_bins(small_stats) -> None:
    distance = distance_table(small_stats)
    assert distance.columns == [
        "layer", "head", "bin_start", "bin_stop", "mass", "uniform_mass", "queries", "query_rows",
    ]  # fmt: skip
    # 5 sequences of 12 symbols + BOS/EOS, cut into windows of 10: 60 data queries
    assert distance["queries"].unique().to_list() == [60]
    assert distance.height == 2 * 3 * len(small_stats.distance_edges)
    assert distance["bin_stop"].max() == 10
    times = time_table(small_stats)
    assert times["bin_stop_s"].is_infinite().sum() == 2 * 3
    assert times["bin"][0].startswith("0 – ")
    heads = head_table(small_stats)
    assert heads.height == 6
    for column in ("mass_beyond_1", "mass_beyond_4", "mass_beyond_300ms", "sink_mass"):
        assert column in heads.columns
    # beyond distance 1 is everything outside bins [0, 1) and [1, 2)
    first_bins = (
        distance.filter(pl.col("bin_start") < 2).group_by("layer", "head").agg(pl.col("mass").sum())
    )
    joined = heads.join(first_bins, on=["layer", "head"])
    # (the kernel sums float32 weights)
    np.testing.assert_allclose(joined["mass_beyond_1"], 1 - joined["mass"], atol=1e-6)


def test_written_files_agree_with_the_tables(small_stats, tmp_path: Path) -> None:
    written = write_statistics(small_stats, tmp_path / "out")
    assert sorted(written) == sorted(
        [f"{t}.{s}" for t in ("attention_by_distance", "attention_by_time", "attention_heads")
         for s in ("parquet", "csv")] + ["summary"]
    )  # fmt: skip
    parquet = pl.read_parquet(written["attention_heads.parquet"])
    csv = pl.read_csv(written["attention_heads.csv"])
    assert parquet.equals(head_table(small_stats))
    np.testing.assert_allclose(csv["mean_distance"], parquet["mean_distance"], rtol=1e-12)
    summary = json.loads(written["summary"].read_text())
    assert summary["excluded"] == EXCLUSION_NOTE
    assert summary["data_queries"] == 60 and summary["split"] == "held_out"
    assert summary["time_edges_s"] == list(small_stats.time_edges)


def test_density_divides_by_bin_width() -> None:
    table = pl.DataFrame(
        {"bin_start": [0.0, 2.0, 10.0], "bin_stop": [2.0, 10.0, math.inf],
         "mass": [0.4, 0.4, 0.2], "uniform_mass": [0.2, 0.4, 0.4]}
    )  # fmt: skip
    dense = mass_density(table, "bin_start", "bin_stop")
    assert dense["density"].to_list()[:2] == [0.2, 0.05]
    assert math.isnan(dense["density"][2])


def test_figures_are_written_at_the_asked_resolution(small_stats, tmp_path: Path) -> None:
    heads = head_table(small_stats)
    with Image.open(plot_mean_distance(heads, tmp_path / "at300")[0]) as image:
        assert round(image.info["dpi"][0]) == 300  # the default
    written = write_stats_plots(
        heads, distance_table(small_stats), time_table(small_stats), tmp_path, dpi=50
    )
    assert sorted(written) == [
        "entropy", "mass_by_distance", "mass_by_time", "mean_distance", "mean_elapsed",
    ]  # fmt: skip
    with Image.open(written["mass_by_time"][0]) as image:
        assert round(image.info["dpi"][0]) == 50
    assert "uniform attention" in written["mass_by_distance"][1].read_text()
