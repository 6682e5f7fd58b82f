"""`seqlm ingest --within-time-order` on each kind of adapter, and `seqlm eval` saying
which order the corpus it scores is in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli_helpers import BIRDSONG_FIXTURES, run, run_seqlm
from helpers.data_cli import assert_one_line_error

from seqlm.corpus import load_corpus
from seqlm.datasets import finch_lesions_path

MAPPING = ["-O", 'entity="patient"', "-O", 'time="hour"', "-O", 'code="code"']
MAPPING += ["-O", 'value="value"', "-O", "scheme.min_entities=1"]


def write_csv(path: Path, patients: int = 3) -> Path:
    """Patients p1, p2, ...; at each hour a few codes, written in reverse code order."""
    lines = ["patient,hour,code,value"]
    for patient in (f"p{n + 1}" for n in range(patients)):
        for hour in range(4):
            for code in ("D", "C", "B", "A")[: 2 + hour % 3]:
                lines.append(f"{patient},{hour},{code},{hour + 1}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def codes_of(corpus_path: Path, seq_id: int = 0) -> list[str]:
    corpus = load_corpus(corpus_path)
    vocab = corpus.vocabulary
    tokens = [vocab.tokens[i] for i in corpus.sequence(seq_id)]
    return [vocab.token_info(t).code for t in tokens if t in vocab.data_tokens]


def test_tabular_events_of_one_time_in_code_order_and_file_order_by_default(tmp_path):
    source = write_csv(tmp_path / "events.csv")
    file, code = tmp_path / "file", tmp_path / "code"
    assert run(["ingest", "tabular", str(source), "--out", str(file), *MAPPING]) == 0
    argv = ["ingest", "tabular", str(source), "--out", str(code), *MAPPING]
    done = run_seqlm(*argv, "--within-time-order", "code")
    assert done.returncode == 0, done.stderr
    assert "in code order" in done.stdout
    assert codes_of(file)[:5] == ["D", "C", "D", "C", "B"]  # hours 0 and 1 as written
    assert codes_of(code)[:5] == ["C", "D", "B", "C", "D"]
    assert load_corpus(file).manifest["within_time_order"] == "file"
    assert load_corpus(code).manifest["within_time_order"] == "code"
    # Only the order moved: the same rows, times and index.
    assert load_corpus(file).manifest["counts"] == load_corpus(code).manifest["counts"]
    for name in ("times.bin", "index.parquet", "tokenizer.json"):
        assert (file / name).read_bytes() == (code / name).read_bytes(), name
    # A subset keeps the order its source was built with.
    assert run(["subset", str(code), "--where", "entity=p2", "--out", str(tmp_path / "p2")]) == 0
    assert load_corpus(tmp_path / "p2").manifest["within_time_order"] == "code"


@pytest.mark.parametrize(
    "adapter, source",
    [
        # Timed syllables: every event has its own onset.
        ("crowsetta-generic-seq", [BIRDSONG_FIXTURES / "bird1.csv"]),
        # Syllable strings have no time at all: their order is the song.
        ("birdsong-strings", [finch_lesions_path() / "bird2_prelesion"]),
    ],
)
def test_birdsong_is_the_same_corpus_in_both_orders(tmp_path, adapter, source):
    corpora = {}
    for order in ("file", "code"):
        corpora[order] = tmp_path / order
        argv = ["ingest", adapter, *map(str, source), "--out", str(corpora[order])]
        assert run([*argv, "--within-time-order", order]) == 0
    for name in ("tokens.bin", "index.parquet", "tokenizer.json"):
        assert (corpora["file"] / name).read_bytes() == (corpora["code"] / name).read_bytes()


def test_an_unknown_order_is_one_line_and_exit_2(tmp_path):
    source = write_csv(tmp_path / "events.csv")
    out = tmp_path / "corpus"
    argv = ["ingest", "tabular", str(source), "--out", str(out), *MAPPING]
    done = run_seqlm(*argv, "--within-time-order", "time")
    assert_one_line_error(done, "'time'", "file, code")
    assert not out.exists()


def test_eval_says_which_order_the_corpus_is_in(tmp_path):
    source = write_csv(tmp_path / "events.csv", patients=20)
    corpus, run_folder = tmp_path / "code", tmp_path / "run"
    argv = ["ingest", "tabular", str(source), "--out", str(corpus), *MAPPING]
    splits = ["-O", "splits.tuning=0.2", "-O", "splits.held_out=0.2"]
    assert run([*argv, *splits, "--within-time-order", "code"]) == 0
    sets = ["model.context=16", "train.steps=2", "train.batch=2", "train.eval_batches=1"]
    argv = ["train", str(corpus), "--out", str(run_folder), "--preset", "tiny"]
    assert run(argv + [a for s in sets for a in ("--set", s)]) == 0
    out = tmp_path / "ev"
    done = run_seqlm(
        "eval", str(run_folder), "--corpus", str(corpus), "--baselines", "none", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = " ".join(done.stdout.split())
    assert "events that share a timestamp are in code order" in printed
    payload = json.loads((out / "eval.json").read_text())
    assert payload["corpus"]["within_time_order"] == "code"
    share = payload["corpus"]["shared_time_share"]
    assert 0.3 < share < 1.0  # 2-4 codes an hour: most targets share their hour
    assert f"({100 * share:.1f}% of the targets share their time with the token before)" in printed


def test_eval_is_silent_about_shared_times_where_no_two_events_share_one(tmp_path):
    """Timed syllables each have their own onset: the line about the order of events
    that share a timestamp would only mislead there."""
    from seqlm.corpus import load_corpus
    from seqlm.evaluation.report import shared_time_share

    corpus = tmp_path / "song"
    source = BIRDSONG_FIXTURES / "bird1.csv"
    splits = ["-O", "splits.tuning=0.2", "-O", "splits.held_out=0.2"]
    assert run(["ingest", "crowsetta-generic-seq", str(source), "--out", str(corpus), *splits]) == 0
    loaded = load_corpus(corpus)
    assert shared_time_share(loaded, loaded.split("held_out")) == 0.0
    run_folder = tmp_path / "run"
    sets = ["model.context=16", "train.steps=2", "train.batch=2", "train.eval_batches=1"]
    argv = ["train", str(corpus), "--out", str(run_folder), "--preset", "tiny"]
    assert run(argv + [a for s in sets for a in ("--set", s)]) == 0
    done = run_seqlm("eval", str(run_folder), "--corpus", str(corpus), "--baselines", "none")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "share a timestamp" not in " ".join(done.stdout.split())
