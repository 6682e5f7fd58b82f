"""Birdsong conventions a new user meets: an intro label other than `i`, crowsetta's
format names, and a Koumura XML copied out of its `BirdN` folder."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from helpers.cli_helpers import BIRDSONG_FIXTURES, run_seqlm

from seqlm.corpora_adapters import get_adapter

CROWSETTA_NAMES = {
    "generic-seq": "crowsetta-generic-seq",
    "aud-seq": "audacity",
    "birdsong-recognition-dataset": "koumura-xml",
    "textgrid": "textgrid",
    "notmat": "notmat",
    "simple-seq": "simple-seq",
}


def write_textgrid(path, bouts=8, intro="in"):
    """Bouts 2 s apart; each starts with two or three `intro` notes, then song."""
    rng = random.Random(3)
    intervals, t = [], 0.0
    for _ in range(bouts):
        notes = [intro] * rng.choice([2, 3]) + [rng.choice("abcde") for _ in range(6)]
        for label in notes:
            intervals.append((t, t + 0.05, label))
            intervals.append((t + 0.05, t + 0.08, ""))
            t += 0.08
        intervals.append((t, t + 2.0, ""))
        t += 2.0
    lines = [
        'File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
        f"xmax = {t}", "tiers? <exists>", "size = 1", "item []:", "    item [1]:",
        '        class = "IntervalTier"', '        name = "syllables"', "        xmin = 0",
        f"        xmax = {t}", f"        intervals: size = {len(intervals)}",
    ]  # fmt: skip
    for i, (start, stop, text) in enumerate(intervals, 1):
        lines += [f"        intervals [{i}]:", f"            xmin = {start}"]
        lines += [f"            xmax = {stop}", f'            text = "{text}"']
    path.write_text("\n".join(lines) + "\n")
    return sum(1 for *_, text in intervals if text == intro)


def test_a_different_intro_label_is_named_and_dropped_as_suggested(tmp_path):
    grid = tmp_path / "zf01_day1.TextGrid"
    n_intro = write_textgrid(grid)
    result = run_seqlm("ingest", "textgrid", str(grid), "-o", str(tmp_path / "kept"))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "syllable labels: 'in':" in text
    assert "'in' begins 8 of 8 bouts (100%)" in text
    suggestion = '--option \'intro_labels=["i", "in"]\' --option drop_intro=true'
    assert suggestion in text
    info = run_seqlm("corpus", "info", str(tmp_path / "kept"))
    assert suggestion in " ".join(info.stdout.split())  # the note stays with the corpus
    # Following the suggestion drops exactly the intro notes, counted as rejects.
    out = tmp_path / "dropped"
    args = ("ingest", "textgrid", str(grid), "-o", str(out))
    result = run_seqlm(*args, "--option", 'intro_labels=["i", "in"]', "--option", "drop_intro=true")
    assert result.returncode == 0, result.stderr
    assert "likely the introductory note" not in result.stdout
    info = json.loads(run_seqlm("corpus", "info", str(out), "--json").stdout)
    assert info["rejects_by_reason"] == {"introductory note": n_intro}


def test_crowsetta_format_names_are_adapter_aliases():
    for alias, name in CROWSETTA_NAMES.items():
        assert get_adapter(alias).name == name
    listing = run_seqlm("adapters", "koumura-xml").stdout
    assert "also accepted as: birdsong-recognition-dataset" in listing
    assert "split defaults: by='recording'" in listing


def test_generic_seq_alias_through_the_cli(tmp_path):
    source = BIRDSONG_FIXTURES / "bird1.csv"
    result = run_seqlm("ingest", "generic-seq", str(source), "-o", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    bad = run_seqlm("ingest", "generic-sequence", str(source), "-o", str(tmp_path / "d"))
    assert bad.returncode == 2 and "also accepted: aud-seq" in bad.stderr


def koumura_xml(wavs=4, chunks=5):
    """Each wav holds `chunks` sequences (chunks of one song session)."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>', "<Sequences>"]
    for wav in range(wavs):
        for chunk in range(chunks):
            parts += ["<Sequence>", f"<WaveFileName>{wav}.wav</WaveFileName>"]
            parts += [f"<Position>{chunk * 64000}</Position>", "<Length>9000</Length>"]
            for k, label in enumerate("abcb"):
                parts += [f"<Note><Position>{k * 2000}</Position><Length>1500</Length>"]
                parts += [f"<Label>{label}</Label></Note>"]
            parts += ["</Sequence>"]
    return "\n".join([*parts, "</Sequences>"]) + "\n"


@pytest.mark.parametrize("folder, bird", [("examples", None), ("Bird7", "Bird7")])
def test_koumura_bird_name_and_split_by_recording(tmp_path, folder, bird):
    path = tmp_path / folder / "Annotation.xml"
    path.parent.mkdir()
    path.write_text(koumura_xml())
    out = tmp_path / "corpus"
    result = run_seqlm("ingest", "birdsong-recognition-dataset", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert ("no bird named" in result.stdout) == (bird is None)
    index = pl.read_parquet(out / "index.parquet")
    assert index["group"].unique().to_list() == [bird]  # never the folder "examples"
    assert index.height == 20
    per_recording = index.group_by("recording").agg(pl.col("split").n_unique())
    assert per_recording["split"].to_list() == [1] * 4  # chunks of a song stay together
