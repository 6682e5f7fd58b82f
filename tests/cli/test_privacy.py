"""Issue 14 class 3: the privacy threshold holds in everything seqlm writes.

A rare code (fewer than `min_entities` = 5 subjects) is planted in each role a code can
play: a dynamic event, a static row (no `//`, so the code is its own kind), a text
value (with `scheme.use_text`), a numeric value's code, and the event that makes a
subject match the cohort. After ingest, corpus info, and (slow) train, eval, generate
and export, no file and no output line holds any of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from helpers.data_cli import read_manifest, seqlm, write_meds_rows

START = datetime(2100, 1, 1)
RARE = {
    "dynamic": "LAB//ZQXDYN",
    "static": "ZQXSTATIC",
    "text": "ZQXTEXT",
    "valued": "LAB//ZQXVAL",
    "cohort": "DIAGNOSIS//ZQXCOHORT",
    "kind": "ZQXKIND//a",
}
CONFIG = """
[adapter.cohort]
include = ["DIAGNOSIS//"]
start = "history"

[scheme]
use_text = true
"""


def _subject(s: int, rare: bool) -> list[tuple]:
    rows = [(s, None, "GENDER//F", None, None)]
    if rare:
        rows += [(s, None, RARE["static"], None, None)]
    t = [START + timedelta(days=s, hours=h) for h in range(40)]
    diagnosis = RARE["cohort"] if rare else "DIAGNOSIS//COMMON"
    rows += [(s, t[0], diagnosis, None, None)]
    for h in range(1, 30):
        rows.append((s, t[h], "LAB//A", float(h % 7), None))
        rows.append((s, t[h], "NOTE//n", None, RARE["text"] if rare and h == 3 else "common"))
    if rare:
        rows += [(s, t[31], RARE["dynamic"], None, None), (s, t[32], RARE["kind"], None, None)]
        rows += [(s, t[33 + i], RARE["valued"], float(i), None) for i in range(6)]
    return rows


def _dataset(root: Path) -> Path:
    """Subjects 1-8 train (1 holds every rare code), 9-10 tuning, 11-12 held out."""
    splits = {"train": range(1, 9), "tuning": range(9, 11), "held_out": range(11, 13)}
    for split, subjects in splits.items():
        rows = [r for s in subjects for r in _subject(s, rare=s == 1)]
        write_meds_rows(root, rows, split=split)
    return root


def _leaks(folder: Path, outputs: list[str]) -> list[str]:
    """Every (file or output, rare string) where a rare string appears."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        texts = [path.read_bytes().decode("utf-8", errors="replace")]
        if path.suffix == ".parquet":  # compressed: read the string cells
            frame = pl.read_parquet(path)
            texts += [str(v) for c in frame.columns for v in frame[c].cast(pl.String).to_list()]
        found += [f"{path}: {code}" for code in RARE.values() for text in texts if code in text]
    for i, text in enumerate(outputs):
        found += [f"output {i}: {code}" for code in RARE.values() if code in text]
    # Kinds of rare codes (ZQXSTATIC is a kind too) count as well.
    return sorted(set(found))


@pytest.fixture
def ingested(tmp_path: Path):
    source = _dataset(tmp_path / "meds")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    work = tmp_path / "out"
    result = seqlm("ingest", "meds", source, "--config", config, "--out", work / "corpus")
    assert result.returncode == 0, result.stderr
    return work, [result.stdout + result.stderr]


def test_rare_codes_reach_no_corpus_file_or_output(ingested):
    work, outputs = ingested
    info = seqlm("corpus", "info", work / "corpus")
    assert info.returncode == 0, info.stderr
    outputs.append(info.stdout + info.stderr)
    assert _leaks(work, outputs) == []
    manifest = read_manifest(work / "corpus")
    # The static kinds kept are the common ones; the rare static code is not among them.
    assert manifest["source"]["settings"]["static_kinds"] == ["GENDER"]
    assert manifest["vocabulary"]["merged_tokens"] >= 4


def test_the_leak_check_finds_codes_that_pass_a_lower_threshold(tmp_path: Path):
    # With min_entities = 1 every planted code is allowed and must be found: the check
    # above can fail.
    source = _dataset(tmp_path / "meds")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    result = seqlm(
        "ingest", "meds", source, "--config", config, "--out", out / "corpus",
        "-O", "scheme.min_entities=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    leaked = {line.split(": ")[-1] for line in _leaks(out, [])}
    assert leaked == set(RARE.values())


@pytest.mark.slow
def test_rare_codes_reach_no_run_report_generation_or_export(ingested):
    work, outputs = ingested
    corpus, run = work / "corpus", work / "run"
    commands = [
        ("train", corpus, "--out", run, "--set", "model.layers=1", "--set", "model.width=32",
         "--set", "model.heads=2", "--set", "model.context=64", "--set", "train.steps=4",
         "--set", "train.eval_every=2", "--set", "train.checkpoint_every=2",
         "--set", "model.positions=learned"),  # exported to GPT-2 below
        ("runs", "show", run),
        ("eval", run, "--corpus", corpus, "--baselines", "ngram", "--out", work / "eval"),
        ("generate", run, "--corpus", corpus, "--sequence", "0", "--prompt-length", "8",
         "--n", "3", "--max-tokens", "32", "--out", work / "generated"),
        ("export", run, "--out", work / "hf"),
    ]  # fmt: skip
    for command in commands:
        result = seqlm(*command)
        assert result.returncode == 0, (command[0], result.stderr[-2000:])
        outputs.append(result.stdout + result.stderr)
    assert _leaks(work, outputs) == []
