"""Issue 14 class 4: time cannot blow up the corpus.

A far-future or far-past timestamp is a counted reject with its reason; a long gap that
is allowed costs one `[TIME//long]` token; `times.bin` never holds inf; bad bounds are a
one-line error. Everything through the CLI, as a user runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.data_cli import assert_one_line_error, read_manifest, seqlm, write_meds_rows

from seqlm.corpus import load_corpus

START = datetime(2100, 1, 1)


def _subjects(extra: list[tuple]) -> list[tuple]:
    """Five subjects, ten hourly labs each, plus `extra` rows."""
    rows = [(s, None, "GENDER//F", None, None) for s in range(1, 6)]
    for s in range(1, 6):
        rows += [(s, START + timedelta(hours=h), "LAB//A", None, None) for h in range(10)]
    return rows + extra


def _finite_and_short(corpus: Path, max_tokens: int) -> None:
    opened = load_corpus(corpus)
    assert opened.times is not None and np.isfinite(np.asarray(opened.times)).all()
    assert int(opened.index["length"].max()) <= max_tokens


@pytest.mark.parametrize(
    "when",
    [
        datetime(9999, 6, 1),
        datetime(1000, 1, 1),
        pytest.param(datetime(2401, 1, 1), marks=pytest.mark.slow),
        pytest.param(datetime(1799, 12, 31), marks=pytest.mark.slow),
    ],
)
def test_implausible_meds_dates_are_counted_rejects(tmp_path: Path, when: datetime):
    root = write_meds_rows(tmp_path / "meds", _subjects([(1, when, "LAB//A", None, None)]))
    result = seqlm("ingest", "meds", root, "--out", tmp_path / "corpus")
    assert result.returncode == 0, result.stderr
    counts = read_manifest(tmp_path / "corpus")["counts"]
    assert (counts["rows_read"], counts["events"], counts["rejects"]) == (56, 55, 1)
    rejects = pl.read_parquet(tmp_path / "corpus" / "rejects.parquet")
    assert rejects["reason"].to_list() == ["time outside plausible range"]
    assert rejects["row"].to_list() == [56]
    _finite_and_short(tmp_path / "corpus", 40)


def test_allowed_far_future_date_costs_one_long_gap_token(tmp_path: Path):
    far = (1, datetime(9999, 6, 1), "LAB//A", None, None)
    root = write_meds_rows(tmp_path / "meds", _subjects([far]))
    out = tmp_path / "corpus"
    result = seqlm("ingest", "meds", root, "--out", out, "-O", 'latest_time="9999-12-31"')
    assert result.returncode == 0, result.stderr
    corpus = load_corpus(out)
    seq = corpus.vocabulary.decode(corpus.sequence(0))
    # Before the fix: 643,246 repeated six-month tokens for this one gap.
    assert seq.count("[TIME//long]") == 1 and len(seq) < 40
    _finite_and_short(out, 40)


def _csv(path: Path, far_time: str) -> Path:
    lines = ["entity,time,code"]
    for e in range(3):
        lines += [f"e{e},{t * 10},c{t % 3}" for t in range(20)]
    lines.append(f"e0,{far_time},c1")
    path.write_text("\n".join(lines) + "\n")
    return path


MAPPING = ["-O", 'entity="entity"', "-O", 'time="time"', "-O", 'code="code"']
TIME_TOKENS = ["-O", "scheme.time_tokens=true", "-O", 'scheme.time_gap_edges=["5s","1m"]']


@pytest.mark.parametrize("far", ["1e13", "-2e11", "inf"])
def test_implausible_csv_seconds_are_counted_rejects(tmp_path: Path, far: str):
    source = _csv(tmp_path / "events.csv", far)
    out = tmp_path / "corpus"
    result = seqlm("ingest", "tabular", source, "--out", out, *MAPPING, *TIME_TOKENS)
    assert result.returncode == 0, result.stderr
    counts = read_manifest(out)["counts"]
    assert (counts["rows_read"], counts["rejects"]) == (61, 1)
    reason = pl.read_parquet(out / "rejects.parquet")["reason"].item()
    assert reason in ("time outside plausible range", "time is not a finite number")
    _finite_and_short(out, 60)


def test_allowed_huge_csv_gap_is_one_token_and_finite(tmp_path: Path):
    source = _csv(tmp_path / "events.csv", "1e13")
    out = tmp_path / "corpus"
    widen = ["-O", "max_abs_seconds=1e14"]
    result = seqlm("ingest", "tabular", source, "--out", out, *MAPPING, *TIME_TOKENS, *widen)
    assert result.returncode == 0, result.stderr
    corpus = load_corpus(out)
    tokens = corpus.vocabulary.decode(corpus.sequence(0))
    assert tokens.count("[TIME//long]") == 1
    _finite_and_short(out, 60)


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ('earliest_time="soon"', "earliest_time"),
        ('latest_time="1700-01-01"', "earliest_time"),
        ("scheme.time_gap_max_repeats=0", "at least 1"),
    ],
)
def test_bad_time_bounds_are_one_line_errors(tmp_path: Path, option: str, needle: str):
    root = write_meds_rows(tmp_path / "meds", _subjects([]))
    result = seqlm("ingest", "meds", root, "--out", tmp_path / "corpus", "-O", option)
    assert_one_line_error(result, needle)
