from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.generic_seq import GenericSeqOptions, read
from seqlm.errors import ConfigError, InputError

HEADER = "label,onset_s,offset_s,notated_path,annot_path,sequence,annotation\n"


def test_bird1_csv_gives_one_recording_per_annotation(examples):
    ingested = read([examples / "bird1.csv"], GenericSeqOptions())
    events = ingested.events.collect()
    assert ingested.rows_read == 151 == events.height
    assert events["recording"].n_unique() == 10
    first = events.row(0, named=True)
    assert first["entity"] == "lbr3009_0005_2017_04_27_06_14_46#0"
    assert first["code"] == "1"
    assert first["bout_start_s"] == pytest.approx(0.0029761904761904)
    assert first["value"] == pytest.approx(0.141504329004329 - 0.0029761904761904)
    second = events.row(1, named=True)
    assert second["time"] == pytest.approx(0.279125 - 0.0029761904761904)
    # The bird id comes from the notated song files (lbr3009_…wav), the source file stays.
    assert events["group"].unique().to_list() == ["lbr3009"]
    assert events["source_file"].unique().to_list() == ["bird1.csv"]
    # Multi-character labels stay whole.
    song = events.filter(pl.col("recording") == "lbr3009_0008_2017_04_27_06_15_14")
    assert song["code"].to_list() == ["2"] * 5 + ["20"] * 23


def test_sample_columns_need_a_sample_rate(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text(
        "label,onset_sample,offset_sample,notated_path,annot_path,sequence,annotation\n"
        "a,16000,19200,C:\\songs\\b5_1.wav,x.mat,0,0\n"
        "b,22400,24000,C:\\songs\\b5_1.wav,x.mat,0,0\n"
    )
    with pytest.raises(ConfigError, match="sample_rate"):
        read([path], GenericSeqOptions())
    events = read([path], GenericSeqOptions(sample_rate=32000)).events.collect()
    assert events["entity"].unique().to_list() == ["b5_1#0"]
    assert events["group"][0] == "b5"
    assert events["time"].to_list() == pytest.approx([0.0, 0.2])
    assert events["value"].to_list() == pytest.approx([0.1, 0.05])


def test_same_song_annotated_twice_keeps_two_recordings(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text(HEADER + "a,0.1,0.2,s.wav,x,0,0\nb,0.1,0.2,s.wav,x,0,1\nc,0,1,None,x,0,2\n")
    events = read([path], GenericSeqOptions()).events.collect()
    assert sorted(events["entity"].to_list()) == ["twice-0#0", "twice-1#0", "twice-2#0"]


def test_malformed_generic_seq(tmp_path):
    missing = tmp_path / "m.csv"
    missing.write_text("label,onset_s,notated_path\na,0.1,s.wav\n")
    with pytest.raises(InputError, match="offset_s") as caught:
        read([missing], GenericSeqOptions())
    assert (caught.value.row, caught.value.column) == (1, "offset_s")
    reversed_times = tmp_path / "r.csv"
    reversed_times.write_text(HEADER + "a,0.1,0.2,s.wav,x,0,0\nb,0.5,0.4,s.wav,x,0,0\n")
    with pytest.raises(InputError, match="reversed") as caught:
        read([reversed_times], GenericSeqOptions())
    assert (caught.value.row, caught.value.column) == (3, "offset_s")
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read([empty], GenericSeqOptions())


def test_milliseconds_in_seconds_columns_are_caught(tmp_path):
    path = tmp_path / "ms.csv"
    path.write_text(HEADER + "a,2100.0,2160.5,s.wav,x,0,0\nb,1000.0,1070.0,s.wav,x,0,0\n")
    with pytest.raises(InputError, match="time_unit=ms"):
        read([path], GenericSeqOptions())
    events = read([path], GenericSeqOptions(time_unit="ms")).events.collect()
    assert events["code"].to_list() == ["b", "a"]  # sorted by onset
    assert events["bout_start_s"][0] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    run_on_bytes(read, GenericSeqOptions(), data, "x.csv")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(max_size=8), max_size=8), max_size=6))
def test_random_rows_raise_only_seqlm_errors(run_on_bytes, rows):
    text = HEADER + "\n".join(",".join(r) for r in rows)
    run_on_bytes(read, GenericSeqOptions(), text.encode(), "r.csv")
