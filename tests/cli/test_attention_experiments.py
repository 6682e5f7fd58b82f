"""`seqlm attention span`, `seqlm attention heads` and `seqlm probe` on a small corpus and
a run folder written the way the trainer writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from helpers.cli_helpers import run
from helpers.corpus_helpers import ingested

from seqlm.corpus import SplitConfig, build_corpus, load_corpus
from seqlm.corpus.conditioning import condition_corpus
from seqlm.model import GPT, GPTConfig
from seqlm.training.checkpoint import WEIGHTS_FILE, RunFolder, save_weights
from seqlm.vocabularies import TokenScheme


@pytest.fixture(scope="module")
def corpus_and_run(tmp_path_factory):
    """24 bouts of 3 birds, pre and post, every split; an untrained 2-layer GPT."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    rows = []
    for bout in range(24):
        bird, condition = f"bird{bout % 3}", ("pre", "post")[bout % 2]
        for order, code in enumerate(rng.choice(list("abcdef"), size=int(rng.integers(8, 30)))):
            rows.append((f"{bird}/{bout:02d}", bird, condition, float(order), str(code)))
    frame = pl.DataFrame(
        rows,
        schema=["entity", "group", "condition", "time", "code"],
        orient="row",
    ).with_columns(kind=pl.lit("syllable"))
    corpus = build_corpus(
        ingested(frame, attributes=("condition",)),
        folder / "corpus",
        TokenScheme(value_mode="ignore"),
        SplitConfig(seed=0, tuning=0.2, held_out=0.5),
    )
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=corpus.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=16)
    model = GPT(config)
    run_folder = RunFolder(folder / "run")
    run_folder.write_config({"model_type": "gpt", "model": config.to_dict()})
    save_weights(model.state_dict(), run_folder.path / WEIGHTS_FILE)
    return folder / "corpus", run_folder.path


@pytest.fixture(scope="module")
def conditioned_run(corpus_and_run, tmp_path_factory):
    """The corpus with a [COND//group=bird] prefix on every bout, and an untrained GPT."""
    folder = tmp_path_factory.mktemp("conditioned")
    corpus = condition_corpus(corpus_and_run[0], folder / "corpus", ["group"], min_sequences=1)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=corpus.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=16)
    run_folder = RunFolder(folder / "run")
    run_folder.write_config({"model_type": "gpt", "model": config.to_dict()})
    save_weights(GPT(config).state_dict(), run_folder.path / WEIGHTS_FILE)
    return corpus, run_folder.path


def test_span_writes_the_table_figures_and_effective_lengths(corpus_and_run, tmp_path, capsys):
    corpus, run_dir = corpus_and_run
    out = tmp_path / "span"
    argv = ["attention", "span", str(run_dir), "-C", str(corpus), "--windows", "1,4,16"]
    assert run([*argv, "--bootstrap", "50", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Loss by window" in printed and "Effective context length by group" in printed
    table = pl.read_csv(out / "span_table.csv")
    assert set(table["mode"]) == {"span", "truncation"}
    assert set(table["window"]) == {1, 4, 16}
    summary = json.loads((out / "span.json").read_text())
    assert set(summary["effective_context_length"]) == {"all", "bird0", "bird1", "bird2"}
    assert "5th-percentile" in summary["definition"]
    for name in ("loss_vs_window.png", "effective_context.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # A span of 16, the block size, is no restriction: the same loss as full context.
    at = (pl.col("group") == "all") & (pl.col("window") == 16) & (pl.col("mode") == "span")
    row = table.filter(at)
    assert np.allclose(row["loss"], row["full_loss"], atol=1e-6)


def test_span_default_output_goes_into_the_run_folder(corpus_and_run, capsys):
    corpus, run_dir = corpus_and_run
    argv = ["attention", "span", str(run_dir), "-C", str(corpus), "-w", "2", "--modes", "span"]
    assert run([*argv, "--bootstrap", "20", "--max-sequences", "2"]) == 0
    assert (run_dir / "analysis" / "span" / "loss_vs_window.png").is_file()
    assert not (run_dir / "analysis" / "span" / "effective_context.png").exists()
    capsys.readouterr()


def test_heads_writes_importance_ablation_and_prune_curve(corpus_and_run, tmp_path, capsys):
    corpus, run_dir = corpus_and_run
    out = tmp_path / "heads"
    assert run(["attention", "heads", str(run_dir), "-C", str(corpus), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Pruning, least important first" in printed
    assert printed.index("WARNING") < printed.index("Heads (")  # an untrained model
    heads = pl.read_csv(out / "heads.csv")
    assert heads.height == 4 and {"importance", "loss_change"} <= set(heads.columns)
    curve = pl.read_csv(out / "prune_curve.csv")
    assert curve["heads_pruned"].to_list() == [0, 1, 2, 3, 4]
    assert (out / "heads.png").read_bytes()[:4] == b"\x89PNG"


def test_heads_never_count_conditioning_targets(conditioned_run, tmp_path, capsys):
    """Issue 13 item 3: the [COND] targets are context only, not in any loss."""
    corpus, run_dir = conditioned_run
    out = tmp_path / "heads"
    argv = ["attention", "heads", str(run_dir), "-C", str(corpus.path), "--split", "all"]
    assert run([*argv, "--no-ablation", "--no-check", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sequences = load_corpus(corpus.path).index.height
    assert f"{sequences} conditioning targets ([COND]) read as context only" in printed
    targets = int((load_corpus(corpus.path).index["length"] - 1).sum())
    assert f"all: {targets - sequences:,} tokens" in printed


def test_probe_reports_accuracy_control_and_selectivity(corpus_and_run, tmp_path, capsys):
    corpus, run_dir = corpus_and_run
    out = tmp_path / "probe"
    argv = ["probe", str(run_dir), "-C", str(corpus), "--label", "condition", "--split", "all"]
    assert run([*argv, "--folds", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "selectivity" in printed
    assert printed.index("WARNING") < printed.index("Probes for")  # an untrained model
    table = pl.read_csv(out / "probe.csv")
    assert table["layer"].to_list() == [0, 1, 2]
    assert ((table["accuracy"] >= 0) & (table["accuracy"] <= 1)).all()
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_never_reads_a_conditioning_position(conditioned_run, tmp_path, capsys):
    """Issue 13 item 3: probing for the bird, the [COND//group=bird] positions (which
    spell out the answer) are not examples; the output says how many were left out."""
    corpus, run_dir = conditioned_run
    out = tmp_path / "probe"
    argv = ["probe", str(run_dir), "-C", str(corpus.path), "--label", "group", "--split", "all"]
    assert run([*argv, "--folds", "3", "--no-check", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    index = load_corpus(corpus.path).index
    assert f"{index.height} conditioning positions ([COND]) excluded" in printed
    # every token but [BOS], [COND] and the closing [EOS] (no [UNK] in this corpus)
    probed = int(index["length"].sum()) - 3 * index.height
    assert f"all: {probed:,} tokens" in printed


def test_the_gate_warns_first_and_on_the_figures(corpus_and_run, tmp_path, capsys):
    """An untrained model: the warning comes before any result, as a user sees it."""
    corpus, run_dir = corpus_and_run
    out = tmp_path / "span"
    argv = ["attention", "span", str(run_dir), "-C", str(corpus), "-w", "1,4"]
    argv += ["--bootstrap", "20", "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-m", "seqlm", *argv, "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout
    assert "WARNING: do not interpret this model" in printed
    assert printed.index("WARNING") < printed.index("Loss by window")
    assert "does not beat the best baseline on held-out data" in printed
    caption = json.loads((out / "span.json").read_text())["interpretation_warning"]
    assert caption.startswith("CAUTION, do not interpret: not better than")
    assert run([*argv, "--out", str(tmp_path / "quiet"), "--no-check"]) == 0
    assert "WARNING" not in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "quiet" / "span.json").read_text())["interpretation_warning"] is None
    )


def test_bad_input_is_a_one_line_error(corpus_and_run, tmp_path, capsys):
    corpus, run_dir = corpus_and_run
    span = ["attention", "span", str(run_dir), "-C", str(corpus), "--out", str(tmp_path)]
    assert run([*span, "--windows", "1,x"]) == 2
    assert "--windows must be comma-separated integers" in capsys.readouterr().err
    assert run([*span, "--windows", "64"]) == 2
    assert "block size" in capsys.readouterr().err
    assert run([*span, "--split", "validation"]) == 2
    assert "no sequences in split 'validation'" in capsys.readouterr().err
    probe = ["probe", str(run_dir), "-C", str(corpus), "--out", str(tmp_path)]
    assert run([*probe, "--label", "bird"]) == 2
    assert "no label 'bird'" in capsys.readouterr().err
    assert run(["attention", "heads", str(tmp_path / "nowhere"), "-C", str(corpus)]) == 2
    assert "not a run folder" in capsys.readouterr().err
