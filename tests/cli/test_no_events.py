"""An ingest that keeps no events says which column and why, and keeps the rejects."""

from __future__ import annotations

import polars as pl
from helpers.cli_helpers import ingest_bird1, run_seqlm

MAPPING = '[adapter]\nentity = "piece"\ncode = "pitch"\ntime = "beat"\norder = "voice"\n'


def _music(tmp_path):
    csv = tmp_path / "music.csv"
    csv.write_text("piece,beat,voice,pitch\nA,0,S,72\nA,0,B,48\nA,1,S,74\n")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return csv, mapping


def test_zero_events_names_the_column_and_writes_rejects(tmp_path):
    csv, mapping = _music(tmp_path)
    out = tmp_path / "corpus"
    result = run_seqlm("ingest", "tabular", str(csv), "-c", str(mapping), "-o", str(out))
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: adapter 'tabular' kept no events from 3 rows read")
    assert "3 order is not an integer (column 'voice')" in error
    assert "Traceback" not in result.stderr
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert rejects.height == 3 and set(rejects["column"]) == {"voice"}
    # The next command explains the folder instead of "not a corpus folder".
    info = run_seqlm("corpus", "info", str(out))
    assert info.returncode == 2 and "kept no events" in info.stderr


def test_zero_events_never_writes_into_an_existing_corpus(tmp_path):
    csv, mapping = _music(tmp_path)
    out = ingest_bird1(tmp_path / "corpus")
    before = sorted(p.name for p in out.iterdir())
    args = ("ingest", "tabular", str(csv), "-c", str(mapping), "-o", str(out), "--overwrite")
    result = run_seqlm(*args)
    assert result.returncode == 2 and "order is not an integer" in result.stderr
    assert "rejected rows are in" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == before  # the old corpus is untouched
