"""`seqlm attention stats --queries/--query-targets/--distance-edges`, as a user runs it.

A tiny planted corpus (`planted_multi`: 4 key/query pairs a sequence, each query 20-24
tokens after its key) and a random rotary model: only the planted query rows (the rows
whose next token is an answer W, X, Z or V) are counted, and the mass in the band
[20, 25) is checked against a dense computation over exactly those rows, its uniform
baseline against 5 / (visible data keys). Bad input is one clear line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from helpers.analysis_helpers import dense_reference_attention, random_gpt, save_run
from helpers.cli_helpers import run, run_seqlm

from seqlm.analysis.corpus_stats import EXCLUDED_TOKEN_IDS

ANSWERS = ("W", "X", "Z", "V")
BAND = (20, 25)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    from seqlm.datasets.planted import write_strings
    from seqlm.datasets.planted_multi import multi_pair_sequences
    from seqlm.ingest import ingest

    folder = tmp_path_factory.mktemp("planted")
    sequences = multi_pair_sequences(60, seed=0, min_gap=20, max_gap=24, pairs=4, spread=10)
    raw = write_strings(folder / "raw", "synth", sequences)
    corpus = ingest("birdsong-strings", [raw], folder / "corpus", workers=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = random_gpt(
        seed=3, vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2,
        positions="rotary",
    )  # fmt: skip
    save_run(folder / "run", model, corpus)
    torch.set_num_threads(threads)
    return folder / "run", Path(corpus.path), corpus, model


def _expected_band(corpus, model) -> tuple[int, np.ndarray, float]:
    """Planted rows of held_out, each head's mean mass on data keys at distance in BAND
    (renormalised over the data keys), and the uniform baseline's."""
    answers = {corpus.vocabulary.token_to_id[a] for a in ANSWERS}
    rows, mass, uniform = 0, np.zeros(model.config.n_head), 0.0
    for seq_id in corpus.split("held_out")["seq_id"].to_list():
        ids = np.asarray(corpus.sequence(seq_id), dtype=np.int64)
        weights, masks = dense_reference_attention(model, torch.from_numpy(ids)[None])
        data = ~np.isin(ids, EXCLUDED_TOKEN_IDS)
        for i in np.flatnonzero(np.isin(ids[1:], list(answers))):
            keys = np.flatnonzero(masks[0][0, i] & data)
            in_band = (i - keys >= BAND[0]) & (i - keys < BAND[1])
            p = weights[0][0, :, i][:, keys]
            mass += (p[:, in_band].sum(-1)) / p.sum(-1)
            uniform += in_band.mean()
            rows += 1
    return rows, mass / rows, uniform / rows


def test_planted_rows_only_and_the_band_mass(planted_run, tmp_path: Path) -> None:
    run, corpus_dir, corpus, model = planted_run
    out = tmp_path / "stats"
    result = run_seqlm(
        "attention", "stats", str(run), "-C", str(corpus_dir), "-o", str(out),
        "--query-targets", ",".join(ANSWERS), "--distance-edges", f"{BAND[0]},{BAND[1]}",
        "--no-check", "--dpi", "40",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows, band, uniform_band = _expected_band(corpus, model)
    held_out = corpus.split("held_out").height
    assert rows == 4 * held_out  # every planted query, nothing else
    summary = json.loads((out / "attention_stats.json").read_text())
    assert summary["counted_queries"] == rows
    assert summary["data_queries"] > 5 * rows
    assert summary["query_filter"] == {"queries": [], "query_targets": list(ANSWERS)}
    assert summary["distance_edges"] == [0, *BAND]
    assert summary["query_rows"].startswith(f"only {rows} of {summary['data_queries']:,}")
    assert f"only {rows} of" in " ".join(result.stdout.split())
    table = pl.read_csv(out / "attention_by_distance.csv").sort("head", "bin_start")
    assert table["queries"].unique().to_list() == [rows]
    assert table["query_rows"].unique().to_list() == [summary["query_rows"]]
    in_band = table.filter(pl.col("bin_start") == BAND[0])
    np.testing.assert_allclose(in_band["mass"], band, atol=1e-5)
    np.testing.assert_allclose(in_band["uniform_mass"], uniform_band, atol=1e-9)
    heads = pl.read_csv(out / "attention_heads.csv")
    assert heads["query_rows"].unique().to_list() == [summary["query_rows"]]
    assert (out / "mass_by_distance.png").is_file()


def test_unfiltered_tables_say_all_rows(planted_run, tmp_path: Path) -> None:
    run_dir, corpus_dir, _, _ = planted_run
    out = tmp_path / "all"
    argv = ["attention", "stats", str(run_dir), "-C", str(corpus_dir), "-o", str(out)]
    assert run([*argv, "--no-check", "--no-plots", "--max-sequences", "3"]) == 0
    summary = json.loads((out / "attention_stats.json").read_text())
    assert summary["counted_queries"] == summary["data_queries"]
    assert summary["query_filter"] is None
    assert summary["query_rows"] == f"all {summary['data_queries']:,} data query rows"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--queries", "ƀ,nope"], "--queries: 'nope' not in the corpus's vocabulary"),
        (["--query-targets", "[BOS]"], "no data query of the held_out split has next token"),
        (["--distance-edges", "30,20"], "--distance-edges: [30, 20] must be positive"),
    ],
    ids=["unknown token", "no row matches", "decreasing"],
)
def test_bad_filters_and_edges_exit_2_with_one_clear_line(
    planted_run, tmp_path: Path, options, message
) -> None:
    run, corpus_dir, _, _ = planted_run
    argv = ["attention", "stats", str(run), "-C", str(corpus_dir), "-o", str(tmp_path / "o")]
    result = run_seqlm(*argv, "--no-check", "--no-plots", *options)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_more_refusals_in_process(planted_run, tmp_path: Path, capsys) -> None:
    """The same exit 2 and message, without a child process each (they start slowly)."""
    run_dir, corpus_dir, _, _ = planted_run
    refused = {
        "--query-targets: ' , ' names no token": ["--query-targets", " , "],
        "distance edge 64 is not below the model's context 64": ["--distance-edges", "20,64"],
        "is not a comma-separated list of numbers": ["--distance-edges", "a,b"],
    }
    for number, (message, options) in enumerate(refused.items()):
        argv = ["attention", "stats", str(run_dir), "-C", str(corpus_dir)]
        argv += ["-o", str(tmp_path / str(number)), "--no-check", "--no-plots", *options]
        assert run(argv) == 2, message
        assert message in " ".join(capsys.readouterr().err.split())
