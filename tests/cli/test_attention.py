"""`seqlm attention maps|stats` on a real (bundled) finch corpus and a saved run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from helpers.analysis_helpers import random_gpt, save_run
from helpers.cli_helpers import run

from seqlm.analysis.corpus_stats import select_sequences


@pytest.fixture(scope="module")
def finch_run(tmp_path_factory):
    """The bundled lesion song of bird 4 (before the lesion) and a random model's run."""
    from seqlm.datasets import finch_lesions_path
    from seqlm.ingest import ingest

    folder = tmp_path_factory.mktemp("finch")
    corpus = ingest(
        "birdsong-strings", [finch_lesions_path() / "bird4_prelesion"], folder / "corpus"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = random_gpt(seed=0, vocab_size=corpus.vocab_size, block_size=48, n_head=2)
    save_run(folder / "run", model, corpus)
    torch.set_num_threads(threads)
    return folder / "run", Path(corpus.path), corpus


def test_stats_writes_tables_and_figures(finch_run, tmp_path: Path, capsys) -> None:
    run_dir, corpus_dir, corpus = finch_run
    out = tmp_path / "stats"
    argv = ["attention", "stats", str(run_dir), "--corpus", str(corpus_dir), "--out", str(out)]
    options = ["--max-sequences", "15", "--beyond", "4,16", "--layers", "all", "--dpi", "60"]
    assert run([*argv, *options]) == 0
    printed = capsys.readouterr().out
    assert "15 sequences" in printed
    # a random model: the gate's warning comes first
    assert printed.index("WARNING: do not interpret") < printed.index("15 sequences")
    heads = pl.read_parquet(out / "attention_heads.parquet")
    assert heads.height == 2 * 2 and "mass_beyond_16" in heads.columns
    summary = json.loads((out / "attention_stats.json").read_text())
    assert summary["sequences"] == 15 and summary["time_edges_s"] is None
    for figure in ("mean_distance", "entropy", "mass_by_distance"):
        assert (out / f"{figure}.png").is_file() and (out / f"{figure}.svg").is_file()
    assert not (out / "mass_by_time.png").exists()  # the lesion strings have no times
    chosen = select_sequences(corpus, "held_out", 15)
    assert summary["data_queries"] == sum(len(corpus.sequence(i)) - 2 for i in chosen)


def test_maps_writes_figures_viewer_and_bertviz(finch_run, tmp_path: Path) -> None:
    run_dir, corpus_dir, corpus = finch_run
    seq_id = int(corpus.split("held_out")["seq_id"][0])
    out = tmp_path / "maps"
    argv = ["attention", "maps", str(run_dir), "-C", str(corpus_dir), "--seq", str(seq_id)]
    assert (
        run(
            [
                *argv,
                "--out",
                str(out),
                "--layers",
                "1",
                "--heads",
                "0",
                "--length",
                "20",
                "--dpi",
                "60",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "layer1_head0.png", "layer1_head0.svg", "grid.png", "grid.svg", "rollout.png",
            "rollout.svg", "viewer.html", "attention_bertviz.json",
        ]
    )  # fmt: skip
    bertviz = json.loads((out / "attention_bertviz.json").read_text())
    assert bertviz["tokens"][0] == "[BOS]" and len(bertviz["tokens"]) == 20
    assert bertviz["layers"] == [1] and bertviz["heads"] == [0]
    # the random model's viewer says, in its title, not to read it
    assert "<h1>CAUTION, do not interpret: not better than" in (out / "viewer.html").read_text()


def test_errors_are_one_line_messages(finch_run, tmp_path: Path, capsys) -> None:
    run_dir, corpus_dir, corpus = finch_run
    base = ["attention", "maps", str(run_dir), "-C", str(corpus_dir), "--out", str(tmp_path)]
    assert run([*base, "--seq", str(len(corpus) + 5)]) == 2
    assert "no sequence" in capsys.readouterr().err
    assert run([*base, "--seq", "0", "--heads", "7"]) == 2
    assert "--heads" in capsys.readouterr().err
    assert run(["attention", "stats", str(tmp_path / "nope"), "-C", str(corpus_dir),
                "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "not a run folder" in capsys.readouterr().err
