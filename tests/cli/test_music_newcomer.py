"""A music-like table as a new user brings it: chorales under catalogue numbers, beats
restarting at 0 in each chorale, four voices per beat. Silent merges are reported, beats
are ingested as unitless time, and the time plots say so."""

from __future__ import annotations

import json
import random

import pytest
from helpers.cli_helpers import run_seqlm

from seqlm.analysis.maps import pooled
from seqlm.analysis.stats_plots import _spans_decades

VOICES = {"S": 72, "A": 65, "T": 60, "B": 48}


def write_chorales(path, catalogue=6, chorales_per_number=(1, 3)):
    """`bwv` holds several chorales for some numbers; `beat` restarts in each chorale."""
    rng = random.Random(1)
    lines = ["bwv,chorale,beat,voice,pitch"]
    for number in range(catalogue):
        for chorale in range(chorales_per_number[number % 2]):
            beat = 0.0
            for _ in range(24):
                for voice, base in VOICES.items():
                    pitch = base + rng.choice([-2, 0, 2, 4, 5, 7])
                    lines.append(f"BWV{250 + number},{number}.{chorale},{beat},{voice},{pitch}")
                beat += rng.choice([0.5, 1.0, 2.0])
    path.write_text("\n".join(lines) + "\n")
    return path


def mapping(path, entity, extra=""):
    path.write_text(
        f'[adapter]\nentity = "{entity}"\ncode = ["voice", "pitch"]\ntime = "beat"\n{extra}'
    )
    return path


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    folder = tmp_path_factory.mktemp("music")
    return write_chorales(folder / "chorales.csv"), folder


def test_merged_chorales_are_reported_at_ingest_and_in_info(music):
    csv, folder = music
    out = folder / "by_number"
    config = mapping(folder / "by_number.toml", "bwv")
    result = run_seqlm("ingest", "tabular", str(csv), "-c", str(config), "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    # 3 numbers hold 3 chorales each: the beat runs back to 0 twice in each.
    assert "warning: time runs back to its start 6 times in 3 entities" in text
    assert "docs/mapping.md" in text
    info = run_seqlm("corpus", "info", str(out), "--json")
    checks = json.loads(info.stdout)["merge_checks"]
    assert checks["time_restarts"] == 6 and checks["entities_with_time_restarts"] == 3
    assert checks["duplicate_events"] > 0
    # The finer entity removes both signs.
    fine = folder / "by_chorale"
    config = mapping(folder / "by_chorale.toml", "chorale")
    result = run_seqlm("ingest", "tabular", str(csv), "-c", str(config), "-o", str(fine))
    assert result.returncode == 0 and "warning" not in result.stdout
    assert json.loads(run_seqlm("corpus", "info", str(fine), "--json").stdout)["merge_checks"] == {
        "duplicate_events": 0,
        "entities_with_duplicates": 0,
        "time_restarts": 0,
        "entities_with_time_restarts": 0,
    }


def test_beats_as_unitless_time_through_to_the_attention_plots(music, tmp_path):
    csv, folder = music
    config = mapping(tmp_path / "index.toml", "chorale", 'time_unit = "index"\n')
    corpus = tmp_path / "corpus"
    base = ("ingest", "tabular", str(csv), "-c", str(config), "-o", str(corpus))
    wrong = run_seqlm(*base, "-O", "scheme.time_tokens=true")  # default edges are durations
    assert wrong.returncode == 2 and "must be plain numbers of time units" in wrong.stderr
    result = run_seqlm(*base, "-O", "scheme.time_tokens=true", "-O", "scheme.time_gap_edges=[1, 2]")
    assert result.returncode == 0, result.stderr
    info = run_seqlm("corpus", "info", str(corpus))
    assert "times are unitless positions (time_unit = index)" in info.stdout
    vocabulary = json.loads(
        run_seqlm("corpus", "info", str(corpus), "--json", "--top", "60").stdout
    )
    assert "[TIME//2]" in {row["token"] for row in vocabulary["top_tokens"]}

    run = tmp_path / "run"
    sets = ["train.steps=4", "train.cpu_threads=1", "model.context=32", "train.eval_every=4"]
    train = ["train", str(corpus), "-o", str(run), "--preset", "tiny"]
    for item in sets:
        train += ["--set", item]
    assert run_seqlm(*train).returncode == 0
    stats = tmp_path / "stats"
    args = ("attention", "stats", str(run), "--corpus", str(corpus), "--out", str(stats))
    result = run_seqlm(*args, "--split", "train", "--dpi", "60")
    assert result.returncode == 0, result.stderr
    assert json.loads((stats / "attention_stats.json").read_text())["time_unit"] == "index"
    elapsed = (stats / "mean_elapsed.svg").read_text()
    assert "mean elapsed time (index units)" in elapsed and "(s)" not in elapsed
    by_time = (stats / "mass_by_time.svg").read_text()
    assert "(index units, log)" in by_time and " s, log" not in by_time
    assert " ms" not in (stats / "attention_by_time.csv").read_text()


def test_log_axis_only_over_a_decade():
    import polars as pl

    narrow = pl.DataFrame({"v": [7.98, 8.05], "u": [8.0, 8.0]})
    wide = pl.DataFrame({"v": [0.05, 8.0], "u": [1.0, 1.0]})
    assert not _spans_decades(narrow, "v", "u") and _spans_decades(wide, "v", "u")


def test_grid_panels_are_pooled_to_a_bounded_size():
    import numpy as np

    data = np.ma.masked_array(np.ones((1000, 1000)), mask=np.triu(np.ones((1000, 1000)), 1))
    small = pooled(data, cells=256)
    assert small.shape == (250, 250)  # blocks of 4x4 tokens
    assert small.mask[0, -1] and not small.mask[-1, 0]
    assert pooled(data[:100, :100], cells=256).shape == (100, 100)
