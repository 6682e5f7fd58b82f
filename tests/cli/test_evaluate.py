"""`seqlm eval`, `seqlm generate`, `seqlm lesion` and `seqlm subset` on a run that the
trainer's CLI trained for a few steps on real finch song (the bundled lesion data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest
import torch
from helpers.cli_helpers import run

from seqlm.corpus import load_corpus
from seqlm.datasets import finch_lesions_path
from seqlm.studies.lesion import ALL_GROUPS as ALL


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(corpus, run): bird 2's song, and a tiny GPT trained 4 steps by `seqlm train`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the autouse one
    root = tmp_path_factory.mktemp("cli-eval")
    data = finch_lesions_path()
    files = [str(data / f"bird2_{c}lesion") for c in ("pre", "post")]
    assert run(["ingest", "birdsong-strings", *files, "--out", str(root / "finch")]) == 0
    sets = ["model.context=32", "train.steps=4", "train.batch=4", "train.eval_batches=1"]
    argv = ["train", str(root / "finch"), "--out", str(root / "run"), "--preset", "tiny"]
    assert run(argv + [a for s in sets for a in ("--set", s)]) == 0
    torch.set_num_threads(previous)
    return root / "finch", root / "run"


def test_eval_prints_one_table_and_writes_eval_json(trained, tmp_path, capsys) -> None:
    corpus, run_folder = trained
    capsys.readouterr()
    argv = ["eval", str(run_folder), "--corpus", str(corpus), "--out", str(tmp_path / "ev")]
    assert run(argv + ["--baselines", "ngram,lstm", "--lstm-set", "steps=2"]) == 0
    out = capsys.readouterr().out
    for label in ("perplexity", "top-10", "ECE", "model", "uniform", "unigram", "n-gram", "LSTM"):
        assert label in out
    payload = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert payload["models"][0] == "model" and payload["models"][-1] == "LSTM"
    assert payload["baselines"]["lstm"]["train"]["max_steps"] == 2
    assert payload["split"] == "held_out"
    assert (tmp_path / "ev" / "reliability.png").is_file()
    assert (run_folder / "eval" / "finch-lstm" / "model.safetensors").is_file()


def test_eval_says_in_words_how_the_model_compares(trained, tmp_path) -> None:
    """As a user runs it: a subprocess, its exit code, and the verdicts in words."""
    corpus, run_folder = trained
    done = subprocess.run(
        [sys.executable, "-m", "seqlm", "eval", str(run_folder), "--corpus", str(corpus)]
        + ["--out", str(tmp_path / "ev"), "--device", "cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "model against each baseline" in out and "top-1 w/o EOS" in out
    # 4 training steps: worse than the n-gram; uniform guessing it may or may not beat
    assert "model is worse than best n-gram" in out
    assert any(
        f"model is better than {b}" in out
        or f"and {b} are not distinguishable" in out
        or f"model is worse than {b}" in out
        for b in ("uniform", "unigram")
    )
    assert "95% CI over" in out
    assert "--sequence-history" not in out  # song has no values to remember
    payload = json.loads((tmp_path / "ev" / "eval.json").read_text())
    verdicts = {c["baseline"]: c["verdict"] for c in payload["comparisons"]}
    assert set(verdicts.values()) <= {"better", "worse", "not distinguishable"}
    assert verdicts[next(b for b in verdicts if b.startswith("best n-gram"))] == "worse"


def test_generate_samples_and_exports(trained, tmp_path, capsys) -> None:
    corpus, run_folder = trained
    first, second = load_corpus(corpus).vocabulary.tokens[-2:]  # two syllables
    capsys.readouterr()
    argv = ["generate", str(run_folder), "--corpus", str(corpus), "--n", "4"]
    argv += ["--max-tokens", "12", "--sequence", "0", "--prompt-length", "3"]
    prompt = f"{first} {second}"
    assert run(argv + ["--prompt", prompt, "--out", str(tmp_path / "gen")]) == 0
    assert "8 samples" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "gen" / "generations.jsonl").open()]
    assert len(records) == 8 and {r["prompt"] for r in records} == {0, 1}
    assert records[0]["prompt_tokens"] == ["[BOS]", first, second]
    assert all(1 <= len(r["ids"]) <= 12 for r in records)
    text = (tmp_path / "gen" / "generations.txt").read_text().splitlines()
    assert len(text) == 8 and text[0].startswith(f"[BOS] {prompt} | ")
    assert run(["generate", str(run_folder), "--corpus", str(corpus), "--prompt", "zz"]) == 2


def test_subset_then_lesion_with_a_given_run(trained, tmp_path, capsys) -> None:
    corpus, run_folder = trained
    pre = tmp_path / "pre"
    assert run(["subset", str(corpus), "--where", "condition=pre", "--out", str(pre)]) == 0
    assert set(pl.read_parquet(pre / "index.parquet")["condition"]) == {"pre"}
    capsys.readouterr()
    argv = ["lesion", str(corpus), "--run", str(run_folder), "--out", str(tmp_path / "les")]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "bird2" in out and "pre → post" in out
    payload = json.loads((tmp_path / "les" / "lesion.json").read_text())
    assert {r["condition"] for r in payload["rows"]} == {"pre", "post"}
    assert (tmp_path / "les" / "lesion.png").is_file()
    # one temperature fitted on the pre-lesion tuning bouts, printed and recorded
    fit = payload["temperature_fit"][ALL]
    assert fit["temperature"] > 0 and fit["nll_after"] <= fit["nll_before"]
    assert f"[{ALL}] temperature {fit['temperature']:.3f} fitted on" in " ".join(out.split())
    assert run([*argv[:-1], str(tmp_path / "plain"), "--no-calibrate-on-tuning"]) == 0
    assert "temperature_fit" not in json.loads((tmp_path / "plain" / "lesion.json").read_text())


def test_errors_are_one_line_messages(trained, tmp_path, capsys) -> None:
    corpus, run_folder = trained
    capsys.readouterr()
    assert run(["eval", str(tmp_path / "missing"), "--corpus", str(corpus)]) == 2
    assert "error:" in capsys.readouterr().err
    assert run(["eval", str(run_folder), "--corpus", str(corpus), "--baselines", "rnn"]) == 2
    assert run(["eval", str(run_folder), "--corpus", str(corpus), "--resamples", "10"]) == 2
    assert "at least 100" in capsys.readouterr().err
    assert run(["subset", str(corpus), "--where", "colour=red", "--out", str(tmp_path / "x")]) == 2
