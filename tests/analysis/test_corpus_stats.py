"""Streaming corpus statistics against a dense computation, a planted dependency, bins."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from helpers.analysis_helpers import (  # noqa: F401 (autouse fixture)
    dense_reference_attention,
    event_corpus,
    random_gpt,
)
from helpers.shared_data import shared_path

from seqlm.analysis.corpus_stats import (
    EXCLUDED_TOKEN_IDS,
    AttentionStatsOptions,
    corpus_attention_statistics,
    select_sequences,
)
from seqlm.analysis.stats_bins import (
    chosen_distance_edges,
    distance_bin_edges,
    format_seconds,
    time_bin_edges,
)
from seqlm.analysis.stats_tables import distance_table, head_table, time_table
from seqlm.errors import ConfigError, CorpusError
from seqlm.model import GPT, GPTConfig

SYMBOLS = list("abcdefgh")


def _random_corpus(path: Path, seed: int = 0, count: int = 9):
    """Sequences of 3..40 symbols (some longer than a 16-token context) with increasing
    times, several equal (elapsed 0)."""
    rng = np.random.default_rng(seed)
    sequences = [SYMBOLS * 2] + [
        [SYMBOLS[i] for i in rng.integers(0, 8, rng.integers(3, 40))] for _ in range(count)
    ]
    times = [np.cumsum(rng.choice([0.0, 0.01, 0.3, 2.0], len(s))).tolist() for s in sequences]
    return event_corpus(path, sequences, times)


def _dense_statistics(model: GPT, corpus, seq_ids, distance_edges, time_edges, beyond_s, keep=None):
    """Every statistic from full maps (the dense reference), summed over data queries
    (only those at positions p of a sequence where `keep(sequence, p)` holds, if given)."""
    context, heads = model.config.block_size, model.config.n_head
    sums = {}
    for layer in range(model.config.n_layer):
        sums[layer] = {
            "n": 0,
            "hist": np.zeros((heads, len(distance_edges))),
            "uniform_hist": np.zeros(len(distance_edges)),
            "dist": np.zeros(heads),
            "entropy": np.zeros(heads),
            "norm_entropy": np.zeros(heads),
            "n_norm": 0,
            "sink": np.zeros(heads),
            "time": np.zeros((heads, len(time_edges))),
            "elapsed": np.zeros(heads),
            "beyond_s": np.zeros((heads, len(beyond_s))),
            "uniform_elapsed": 0.0,
        }
    for seq_id in seq_ids:
        ids_all = np.asarray(corpus.sequence(seq_id), dtype=np.int64)
        times_all = np.asarray(corpus.sequence_times(seq_id), dtype=np.float64)
        for start in range(0, len(ids_all), context):
            ids = ids_all[start : start + context]
            times = times_all[start : start + context]
            weights, masks = dense_reference_attention(model, torch.from_numpy(ids)[None])
            data = ~np.isin(ids, EXCLUDED_TOKEN_IDS)
            for layer in range(model.config.n_layer):
                s = sums[layer]
                for i in np.flatnonzero(data):
                    if keep is not None and not keep(ids_all, start + i):
                        continue
                    keys = np.flatnonzero(masks[layer][0, i] & data)
                    sink_keys = np.flatnonzero(masks[layer][0, i] & ~data)
                    distance = i - keys
                    elapsed = times[i] - times[keys]
                    s["n"] += 1
                    for lo_index, lo in enumerate(distance_edges):
                        hi = ([*distance_edges[1:], math.inf])[lo_index]
                        s["uniform_hist"][lo_index] += np.mean((distance >= lo) & (distance < hi))
                    s["uniform_elapsed"] += elapsed.mean()
                    if len(keys) > 1:
                        s["n_norm"] += 1
                    for h in range(heads):
                        row = weights[layer][0, h, i]
                        s["sink"][h] += row[sink_keys].sum()
                        p = row[keys] / row[keys].sum()
                        for b, lo in enumerate(distance_edges):
                            hi = ([*distance_edges[1:], math.inf])[b]
                            s["hist"][h, b] += p[(distance >= lo) & (distance < hi)].sum()
                        for b, lo in enumerate(time_edges):
                            hi = ([*time_edges[1:], math.inf])[b]
                            s["time"][h, b] += p[(elapsed >= lo) & (elapsed < hi)].sum()
                        s["dist"][h] += (p * distance).sum()
                        s["elapsed"][h] += (p * elapsed).sum()
                        for b, limit in enumerate(beyond_s):
                            s["beyond_s"][h, b] += p[elapsed > limit].sum()
                        entropy = -(p[p > 0] * np.log(p[p > 0])).sum()
                        s["entropy"][h] += entropy
                        if len(keys) > 1:
                            s["norm_entropy"][h] += entropy / np.log(len(keys))
    return sums


def _filter_keep(corpus, tokens: tuple[str, ...], targets: tuple[str, ...]):
    """The dense reference's row filter: token in `tokens` and next token in `targets`."""
    ids = corpus.vocabulary.token_to_id
    own, nexts = {ids[t] for t in tokens}, {ids[t] for t in targets}

    def keep(sequence: np.ndarray, position: int) -> bool:
        following = int(sequence[position + 1]) if position + 1 < len(sequence) else -1
        return (not own or int(sequence[position]) in own) and (not nexts or following in nexts)

    return keep


@pytest.mark.parametrize(
    ("overrides", "tokens", "targets"),
    [
        ({"positions": "rotary", "attention_span": 6}, (), ()),
        ({"layer_spans": [None, 4]}, (), ()),
        ({"positions": "rotary"}, ("a", "b", "c"), ()),
        ({"layer_spans": [None, 4]}, ("a", "b", "c", "d"), ("e", "f", "g")),
        ({"positions": "rotary"}, (), ("h",)),
        ({"positions": "alibi"}, (), ()),
        ({"positions": "alibi", "layer_spans": [None, 4]}, ("a", "b", "c"), ()),
    ],
    ids=[
        "rotary span 6",
        "per-layer spans",
        "queries",
        "queries and targets",
        "targets",
        "alibi",
        "alibi spans queries",
    ],  # fmt: skip
)
def test_streaming_statistics_equal_the_dense_computation(
    tmp_path: Path, overrides, tokens, targets
) -> None:
    """All data queries, or only the rows a query-row filter keeps (their own token and
    the token after them, also across a window's end): every figure equals the dense
    computation over exactly those rows."""
    corpus = _random_corpus(tmp_path / "corpus")
    model = random_gpt(seed=7, vocab_size=corpus.vocab_size, block_size=16, **overrides)
    options = AttentionStatsOptions(
        split="held_out",
        beyond_distances=(2, 5),
        time_edges=(0.0, 0.005, 0.1, 1.0),
        beyond_seconds=(0.05, 1.5),
        batch_tokens=40,  # several batches with padding
        chunk_queries=3,  # several query chunks per window
        query_tokens=tokens,
        query_targets=targets,
    )
    stats = corpus_attention_statistics(model, corpus, options)
    seq_ids = select_sequences(corpus, "held_out", None)
    keep = _filter_keep(corpus, tokens, targets) if tokens or targets else None
    dense = _dense_statistics(
        model, corpus, seq_ids, stats.distance_edges, options.time_edges, options.beyond_seconds,
        keep,
    )  # fmt: skip
    heads = head_table(stats)
    distance = distance_table(stats)
    times = time_table(stats)
    for layer, s in dense.items():
        n = s["n"]
        assert stats.layers[layer].distance.queries == n
        rows = heads.filter(pl.col("layer") == layer).sort("head")
        np.testing.assert_allclose(rows["mean_distance"], s["dist"] / n, atol=1e-5)
        np.testing.assert_allclose(rows["entropy"], s["entropy"] / n, atol=1e-5)
        np.testing.assert_allclose(
            rows["normalized_entropy"], s["norm_entropy"] / s["n_norm"], atol=1e-5
        )
        np.testing.assert_allclose(rows["sink_mass"], s["sink"] / n, atol=1e-6)
        np.testing.assert_allclose(rows["mean_elapsed_s"], s["elapsed"] / n, atol=1e-5)
        np.testing.assert_allclose(
            rows["uniform_mean_elapsed_s"], s["uniform_elapsed"] / n, atol=1e-9
        )
        np.testing.assert_allclose(rows["mass_beyond_1.5s"], s["beyond_s"][:, 1] / n, atol=1e-6)
        bins = distance.filter(pl.col("layer") == layer).sort("head", "bin_start")
        np.testing.assert_allclose(
            bins["mass"].to_numpy().reshape(model.config.n_head, -1), s["hist"] / n, atol=1e-6
        )
        np.testing.assert_allclose(
            bins.filter(pl.col("head") == 0)["uniform_mass"], s["uniform_hist"] / n, atol=1e-9
        )
        time_bins = times.filter(pl.col("layer") == layer).sort("head", "bin_start_s")
        np.testing.assert_allclose(
            time_bins["mass"].to_numpy().reshape(model.config.n_head, -1), s["time"] / n, atol=1e-6
        )
    # every counted query's renormalised mass is 1, over distance bins and time bins
    for table in (distance, times):
        totals = table.group_by("layer", "head").agg(
            pl.col("mass").sum(), pl.col("uniform_mass").sum()
        )
        np.testing.assert_allclose(totals["mass"], 1.0, atol=1e-6)
        np.testing.assert_allclose(totals["uniform_mass"], 1.0, atol=1e-9)
    assert stats.queries == sum(len(corpus.sequence(i)) - 2 for i in seq_ids)
    assert stats.counted_queries == dense[0]["n"] > 0
    assert (stats.counted_queries < stats.queries) == bool(tokens or targets)


def test_a_planted_dependency_at_distance_d_peaks_at_d(tmp_path: Path) -> None:
    """Token t + 1 is a fixed function of token t - d: a trained head looks back d tokens."""
    d, length, rng = 5, 30, np.random.default_rng(0)
    successor = {s: SYMBOLS[(i + 3) % 8] for i, s in enumerate(SYMBOLS)}

    def planted() -> list[str]:
        tokens = [SYMBOLS[i] for i in rng.integers(0, 8, d + 1)]
        while len(tokens) < length:
            tokens.append(successor[tokens[-1 - d]])
        return tokens

    sequences = [SYMBOLS * 2] + [planted() for _ in range(160)]
    times = [[0.1 * i for i in range(len(s))] for s in sequences]
    corpus = event_corpus(tmp_path / "planted", sequences, times)
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=corpus.vocab_size,
        n_layer=1,
        n_head=2,
        n_embd=32,
        block_size=32,
        positions="rotary",
    )
    model = GPT(config)
    rows = torch.from_numpy(
        np.stack([np.asarray(corpus.sequence(i), dtype=np.int64) for i in range(1, 161)])
    )
    # ~150 steps reach the loss floor (the first d + 1 symbols are random); lr 1e-2 stalls
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(200):
        batch = rows[torch.randint(0, 160, (32,), generator=torch.Generator().manual_seed(step))]
        loss = model(batch[:, :-1], batch[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    stats = corpus_attention_statistics(
        model,
        corpus,
        AttentionStatsOptions(
            max_sequences=40, time_edges=(0.0, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65)
        ),
    )
    table = distance_table(stats)
    peaks = table.sort("mass", descending=True).group_by("head", maintain_order=True).first()
    assert d in peaks["bin_start"].to_list(), peaks
    best = peaks.filter(pl.col("bin_start") == d)
    assert float(best["mass"].max()) > 0.5  # uniform attention would give ~0.07
    # the same head, by elapsed time: 0.1 s per token, so the peak is the bin around 0.5 s
    head = int(best.sort("mass", descending=True)["head"][0])
    by_time = time_table(stats).filter(pl.col("head") == head).sort("mass", descending=True)
    assert float(by_time["bin_start_s"][0]) == pytest.approx(0.45)


def test_bin_edges_and_labels() -> None:
    assert distance_bin_edges(8) == tuple(range(8))
    edges = distance_bin_edges(512)
    assert edges[:17] == tuple(range(17))
    assert edges[17:] == (23, 32, 45, 64, 91, 128, 181, 256, 362)
    assert time_bin_edges(0.03, 2.0) == (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    assert time_bin_edges(4.0, 90.0) == (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
    days = [format_seconds(e) for e in time_bin_edges(3600.0, 400 * 86400.0)]
    assert days == [
        "0",
        "1 h",
        "2 h",
        "6 h",
        "12 h",
        "1 d",
        "2 d",
        "4 d",
        "7 d",
        "14 d",
        "30 d",
        "60 d",
        "180 d",
        "1 y",
    ]
    with pytest.raises(ConfigError):
        time_bin_edges(0.0, 1.0)
    labels = [format_seconds(s) for s in (0, 2e-4, 0.05, 2, 300, 7200, 3 * 86400, 2 * 365 * 86400)]
    assert labels == ["0", "200 us", "50 ms", "2 s", "5 min", "2 h", "3 d", "2 y"]


def test_sequence_selection_and_option_errors(tmp_path: Path) -> None:
    corpus = _random_corpus(tmp_path / "corpus", count=9)
    held = corpus.split("held_out")["seq_id"].to_list()
    assert select_sequences(corpus, "held_out", None) == held
    assert select_sequences(corpus, "held_out", 3) == [held[0], held[4], held[8]]
    with pytest.raises(CorpusError):
        select_sequences(corpus, "tuning", None)
    with pytest.raises(ConfigError):
        AttentionStatsOptions(max_sequences=0)
    with pytest.raises(ConfigError):
        AttentionStatsOptions(time_edges=(0.1, 1.0))
    with pytest.raises(ConfigError, match="start at 0 and increase"):
        AttentionStatsOptions(distance_edges=(0, 5, 5))
    assert chosen_distance_edges((3990, 4010)) == (0, 3990, 4010)
    assert chosen_distance_edges((0, 7)) == (0, 7)
    for bad in ((), (-1,), (9, 3)):
        with pytest.raises(ConfigError, match="--distance-edges"):
            chosen_distance_edges(bad)
    model = random_gpt(vocab_size=corpus.vocab_size, block_size=16)
    with pytest.raises(ConfigError):
        corpus_attention_statistics(model, corpus, AttentionStatsOptions(layers=(5,)))
    with pytest.raises(CorpusError):
        corpus_attention_statistics(random_gpt(vocab_size=99), corpus)
    refused = {
        "'zz' not in the corpus's vocabulary": AttentionStatsOptions(query_tokens=("a", "zz")),
        "--query-targets: 'Q'": AttentionStatsOptions(query_targets=("Q",)),
        "no data query of the held_out split": AttentionStatsOptions(query_targets=("[BOS]",)),
        "not below the model's context 16": AttentionStatsOptions(distance_edges=(0, 16)),
    }
    for message, options in refused.items():
        with pytest.raises(ConfigError, match=message):
            corpus_attention_statistics(model, corpus, options)


def test_bundled_finch_corpus_without_times(tmp_path: Path) -> None:
    from seqlm.datasets import finch_lesions_path
    from seqlm.ingest import ingest

    folder = finch_lesions_path()
    corpus = ingest("birdsong-strings", [folder / "bird2_prelesion"], tmp_path / "finch")
    model = random_gpt(vocab_size=corpus.vocab_size, block_size=64)
    stats = corpus_attention_statistics(model, corpus, AttentionStatsOptions(max_sequences=12))
    assert stats.sequences == 12 and not stats.has_times and time_table(stats) is None
    heads = head_table(stats)
    assert "mean_elapsed_s" not in heads.columns
    assert (heads["mean_distance"] <= heads["uniform_mean_distance"] * 3).all()
    assert ((heads["normalized_entropy"] > 0) & (heads["normalized_entropy"] <= 1)).all()


def test_real_song_times_from_crowsetta_example(tmp_path: Path) -> None:
    """bird1.csv (crowsetta generic-seq, Bengalese finch): real onsets, sub-second bins."""
    from seqlm.ingest import ingest

    source = shared_path("birdsong", "format-examples", "bird1.csv")
    corpus = ingest("crowsetta-generic-seq", [source], tmp_path / "bird1")
    model = random_gpt(vocab_size=corpus.vocab_size, block_size=32)
    stats = corpus_attention_statistics(model, corpus, AttentionStatsOptions(split="train"))
    assert stats.has_times and stats.time_edges[0] == 0.0
    assert 0.001 <= stats.time_edges[1] <= 0.1  # syllable gaps are tens of milliseconds
    assert stats.time_edges[-1] <= 2.0  # songs last about a second or two
    times = time_table(stats)
    totals = times.group_by("layer", "head").agg(pl.col("mass").sum())
    np.testing.assert_allclose(totals["mass"], 1.0, atol=1e-6)
    heads = head_table(stats)
    assert ((heads["mean_elapsed_s"] > 0) & (heads["mean_elapsed_s"] < 2.0)).all()


def test_sharp_heads_give_finite_statistics(tmp_path: Path) -> None:
    """Issue 20: a trained MIMIC model gave NaN elapsed-time statistics for 9 of 16 heads.
    A sharp head's score at an uncounted query (EOS sees data keys) overflowed exp() to
    inf there, and inf times that query's zero weight is NaN. Scaled queries reproduce it."""
    corpus = _random_corpus(tmp_path / "corpus")
    model = random_gpt(seed=7, vocab_size=corpus.vocab_size, block_size=16)
    width = model.config.n_embd
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[:width] *= 60.0  # the query rows: scores ~60x larger
    options = AttentionStatsOptions(
        split="held_out", time_edges=(0.0, 0.005, 0.1, 1.0), beyond_seconds=(1.5,)
    )
    stats = corpus_attention_statistics(model, corpus, options)
    heads = head_table(stats)
    for column in ("mean_elapsed_s", "sink_mass", "mean_distance", "mass_beyond_1.5s"):
        assert heads[column].is_finite().all(), column
    assert heads["sink_mass"].is_between(0.0, 1.0).all()
    longest = max(float(corpus.sequence_times(i).max()) for i in range(len(corpus)))
    assert heads["mean_elapsed_s"].is_between(0.0, longest).all()
    # The dense reference renormalises full-softmax rows over the data keys, which
    # underflows to 0/0 for the sharpest heads; where it is finite the two agree.
    seq_ids = select_sequences(corpus, "held_out", None)
    dense = _dense_statistics(
        model, corpus, seq_ids, stats.distance_edges, options.time_edges, options.beyond_seconds
    )
    compared = 0
    for layer, sums in dense.items():
        rows = heads.filter(pl.col("layer") == layer).sort("head")
        expected = sums["elapsed"] / sums["n"]
        finite = np.isfinite(expected)
        compared += int(finite.sum())
        np.testing.assert_allclose(
            rows["mean_elapsed_s"].to_numpy()[finite], expected[finite], rtol=1e-4
        )
    assert compared > 0
