"""examples/bach_chorales/make_csv.py: MusicXML in .mxl zips to the event table that
`seqlm ingest tabular` reads with examples/bach_chorales/mapping.toml."""

from __future__ import annotations

import csv
import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers.shared_data import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "bach_chorales"

SCORE = """<?xml version="1.0" encoding="utf-8"?>
<score-partwise version="3.0">
  <part-list>
    <score-part id="P1"><part-name>Soprano</part-name></score-part>
    <score-part id="P2"><part-name>Bass</part-name></score-part>
    <score-part id="P3"><part-name>Horn 2</part-name></score-part>
  </part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions>2</divisions></attributes>
      <note><pitch><step>C</step><octave>5</octave></pitch><duration>2</duration></note>
      <note><grace/><pitch><step>D</step><octave>5</octave></pitch></note>
      <note><pitch><step>F</step><alter>1</alter><octave>4</octave></pitch><duration>1</duration>
        <tie type="start"/></note>
      <note><pitch><step>F</step><alter>1</alter><octave>4</octave></pitch><duration>1</duration>
        <tie type="stop"/></note>
      <note><rest/><duration>2</duration></note>
      <note><pitch><step>B</step><alter>-1</alter><octave>4</octave></pitch><duration>2</duration></note>
    </measure>
  </part>
  <part id="P2">
    <measure number="1">
      <attributes><divisions>1</divisions></attributes>
      <note><pitch><step>C</step><octave>3</octave></pitch><duration>2</duration></note>
      <note><chord/><pitch><step>G</step><octave>3</octave></pitch><duration>2</duration></note>
      <backup><duration>2</duration></backup>
      <forward><duration>1</duration></forward>
      <note><pitch><step>E</step><octave>3</octave></pitch><duration>1</duration></note>
    </measure>
  </part>
  <part id="P3">
    <measure number="1">
      <attributes><divisions>1</divisions></attributes>
      <note><pitch><step>A</step><octave>4</octave></pitch><duration>4</duration></note>
    </measure>
  </part>
</score-partwise>
"""


def _load_module():
    spec = importlib.util.spec_from_file_location("make_csv", EXAMPLE / "make_csv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mxl(score: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/container.xml", "<container/>")
        archive.writestr("chorale.xml", score)
    return buffer.getvalue()


def test_chorale_rows_onsets_pitches_and_voices():
    rows = _load_module().chorale_rows("bwv0.1", SCORE.encode())
    # Soprano: C5 at 0, grace left out, F#4 at 1 (its tied half is no new note), the
    # rest moves time on, Bb4 at 3. Bass: C3 and G3 struck together at 0, then back up
    # and forward one beat: E3 at 1. Horn 2 is not one of the four voices.
    assert rows == [
        ("bwv0.1", 0.0, "Soprano", 0, 72),
        ("bwv0.1", 0.0, "Bass", 1, 48),
        ("bwv0.1", 0.0, "Bass", 1, 55),
        ("bwv0.1", 1.0, "Soprano", 0, 66),
        ("bwv0.1", 1.0, "Bass", 1, 52),
        ("bwv0.1", 3.0, "Soprano", 0, 70),
    ]
    every_part = _load_module().chorale_rows("bwv0.1", SCORE.encode(), all_parts=True)
    assert ("bwv0.1", 0.0, "Horn 2", 2, 69) in every_part


def test_cli_writes_csv_that_tabular_ingests(tmp_path: Path):
    folder = tmp_path / "mxl"
    folder.mkdir()
    for name in ("bwv1.1", "bwv2.2", "bwv3.3", "bwv4.4", "bwv5.5"):
        (folder / f"{name}.mxl").write_bytes(_mxl(SCORE))
    table = tmp_path / "bach.csv"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_csv.py"), str(folder), str(table)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "30 notes from 5 chorales" in done.stdout
    with table.open() as handle:
        assert len(list(csv.DictReader(handle))) == 30
    seqlm = Path(sys.executable).parent / "seqlm"
    config = EXAMPLE / "mapping.toml"
    out = tmp_path / "corpus"
    done = subprocess.run(
        [str(seqlm), "ingest", "tabular", str(table), "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "sequences: 5" in done.stdout
    assert "time runs back" not in done.stdout + done.stderr


def test_cli_missing_source_exits_2(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_csv.py"), str(tmp_path / "none"), str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr
