from __future__ import annotations

import csv
import io

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.simple_seq import SimpleSeqOptions, read
from seqlm.errors import ConfigError, InputError

DAS = "bl26lb16_190412_0721.20144_annotations.csv"


def test_das_csv_read_as_seconds_is_refused_with_the_fix(examples):
    with pytest.raises(InputError) as caught:
        read([examples / DAS], SimpleSeqOptions())
    message = str(caught.value)
    assert DAS in message
    assert caught.value.column == "start_seconds"
    assert "looks like milliseconds" in message
    assert "not sorted" in message
    assert "time_unit=ms" in message
    assert "\n" not in message


def test_das_csv_with_milliseconds_reads_sorted_and_timed(examples):
    ingested = read([examples / DAS], SimpleSeqOptions(time_unit="ms"))
    events = ingested.events.collect()
    assert ingested.rows_read == 79 == events.height
    assert len(ingested.rejects) == 0
    assert events["group"].unique().to_list() == ["bl26lb16"]
    # Row 58 (`i`, 20953.84375 ms) is the earliest onset; it stands alone 0.61 s before
    # the song, so it is a bout of its own.
    first = events.row(0, named=True)
    assert first["entity"] == "bl26lb16_190412_0721.20144_annotations#0"
    assert (first["code"], first["time"]) == ("i", 0.0)
    assert first["bout_start_s"] == pytest.approx(20.95384375)
    assert first["value"] == pytest.approx((21033.75 - 20953.84375) / 1000)
    song = events.filter(pl.col("entity").str.ends_with("#1"))
    assert song.height == 78
    assert song["bout_start_s"][0] == pytest.approx(21.6480625)
    assert "".join(song["code"].to_list()).startswith("iiabbbbsiabbbbb")
    # Order follows onset, not the file's row order (grouped by label in DAS exports).
    assert song["order"].to_list() == list(range(78))
    assert song["time"].is_sorted()
    assert song["time"][-1] == pytest.approx(28.88984375 - 21.6480625)


def test_check_units_false_keeps_seconds_as_given(examples):
    ingested = read([examples / DAS], SimpleSeqOptions(check_units=False, bout_gap_s=None))
    events = ingested.events.collect()
    assert events["value"].median() > 40  # really "seconds": the user asked for it


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_standard_simple_seq_keeps_multi_character_labels(tmp_path):
    path = _write(
        tmp_path,
        "y7_day1.csv",
        "onset_s,offset_s,label\n0.10,0.20,J1\n0.25,0.40,call\n0.45,0.50,SIL\n1.20,1.30,a\n",
    )
    ingested = read([path], SimpleSeqOptions())
    events = ingested.events.collect()
    assert events["code"].to_list() == ["J1", "call", "a"]
    assert events["entity"].to_list() == ["y7_day1#0", "y7_day1#0", "y7_day1#1"]
    assert events["group"][0] == "y7"
    assert ingested.rejects.to_frame()["row"].to_list() == [4]  # the SIL line
    assert ingested.rows_read == 4


def test_sample_and_millisecond_variants(tmp_path):
    samples = _write(tmp_path, "s.csv", "onset_sample,offset_sample,label\n3200,6400,a\n")
    with pytest.raises(ConfigError, match="sample_rate"):
        read([samples], SimpleSeqOptions())
    events = read([samples], SimpleSeqOptions(sample_rate=32000)).events.collect()
    assert (events["bout_start_s"][0], events["value"][0]) == pytest.approx((0.1, 0.1))
    ms = _write(tmp_path, "m.txt", "begin\tend\tsyl\n100\t250\tb\n")
    options = SimpleSeqOptions(
        onset_column="begin", offset_column="end", label_column="syl", time_unit="ms"
    )
    events = read([ms], options).events.collect()
    assert (events["code"][0], events["value"][0]) == ("b", pytest.approx(0.15))


@pytest.mark.parametrize(
    ("text", "row", "column", "match"),
    [
        ("onset_s,label\n0.1,a\n", 1, "offset_s", "no offset column"),
        ("onset_s,offset_s,label\n0.3,0.2,a\n", 2, "offset_s", "reversed"),
        ("onset_s,offset_s,label\n-0.1,0.2,a\n", 2, "onset_s", "negative"),
        ("onset_s,offset_s,label\n0.1,0.2,a\n0.3,0.", 3, "label", "truncated"),
        ("onset_s,offset_s,label\n0.1,x,a\n", 2, "offset_s", "not a number"),
    ],
)
def test_malformed_simple_seq_names_row_and_column(tmp_path, text, row, column, match):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(InputError, match=match) as caught:
        read([path], SimpleSeqOptions())
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), row, column)


def test_empty_and_wrongly_encoded_files(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read([_write(tmp_path, "e.csv", "")], SimpleSeqOptions())
    latin = _write(tmp_path, "l.csv", "onset_s,offset_s,label\n0.1,0.2,é\n", "latin-1")
    with pytest.raises(InputError, match="utf-8") as caught:
        read([latin], SimpleSeqOptions())
    assert caught.value.row == 2
    events = read([latin], SimpleSeqOptions(encoding="latin-1")).events.collect()
    assert events["code"].to_list() == ["é"]


def test_header_only_file_gives_no_events(tmp_path):
    ingested = read([_write(tmp_path, "h.csv", "onset_s,offset_s,label\n")], SimpleSeqOptions())
    assert ingested.rows_read == 0
    assert ingested.events.collect().height == 0


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    run_on_bytes(read, SimpleSeqOptions(), data, "x.csv")


_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
    st.integers(-5, 10**6).map(str),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(_cell, min_size=0, max_size=4), max_size=8))
def test_random_csv_rows_raise_only_seqlm_errors(run_on_bytes, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["onset_s", "offset_s", "label"])
    writer.writerows(rows)
    result = run_on_bytes(read, SimpleSeqOptions(), buffer.getvalue().encode(), "r.csv")
    if result is not None:
        assert result.rows_read == result.events.collect().height + len(result.rejects)
