from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.audacity import AudacityOptions, read
from seqlm.errors import InputError

CANARY = "405_marron1_June_14_2016_69640887.audacity.txt"


def test_canary_label_track(examples):
    ingested = read([examples / CANARY], AudacityOptions())
    events = ingested.events.collect()
    assert ingested.rows_read == 61
    assert ingested.rejects.counts_by_reason() == {"silence label": 25}
    assert events.height == 36
    assert events["group"].unique().to_list() == ["marron1"]
    # Two calls, each followed by more than 0.5 s of SIL, then the song.
    bouts = events.group_by("entity", maintain_order=True).agg("code", "bout_start_s")
    assert bouts["code"].to_list()[:2] == [["call"], ["call"]]
    assert bouts["bout_start_s"].to_list()[:2] == [[0.7698181682], [2.2184007427]]
    song = events.filter(pl.col("entity").str.ends_with("#2"))
    assert song["code"].to_list()[:12] == [
        "Z", "Ci", "C", "H", "E", "R", "J1", "J1", "J2", "J2", "B1", "B2",
    ]  # fmt: skip
    assert song["time"][0] == 0.0
    assert song["value"][0] == pytest.approx(3.6945753663 - 3.0903094924)
    # Overlapping labels (H ends after E starts) stay in onset order.
    assert song["code"][-2:].to_list() == ["H", "E"]
    assert song["time"][-1] == pytest.approx(28.3453119777 - 3.0903094924)


def test_spinetail_extended_labels(examples):
    ingested = read([examples / "spinetail.txt"], AudacityOptions())
    events = ingested.events.collect()
    assert ingested.rows_read == 18  # 36 lines: each label has a frequency line
    assert events.height == 18
    assert events["code"].value_counts().sort("code").rows() == [("CRER", 4), ("SP", 14)]
    first = events.row(0, named=True)
    assert (first["code"], first["bout_start_s"]) == ("SP", 0.101385)
    assert first["value"] == pytest.approx(0.367520 - 0.101385)
    bout0 = events.filter(pl.col("entity") == "spinetail#0")["code"].to_list()
    assert bout0 == ["SP", "CRER", "SP", "SP"]
    assert events["entity"].n_unique() == 6


def test_variants_decimal_comma_spaces_crlf_bom_point_labels(tmp_path):
    path = tmp_path / "b12_song.txt"
    text = "\ufeff0,5\t0,75\ta b\r\n1.0 1.2 long label\r\n1.3\t1.3\tpoint\r\n1.4\t1.5\t\r\n\r\n"
    path.write_bytes(text.encode())
    ingested = read([path], AudacityOptions())
    events = ingested.events.collect()
    assert events["code"].to_list() == ["a b", "long label", "point"]
    assert events["value"].to_list() == pytest.approx([0.25, 0.2, 0.0])
    assert ingested.rejects.counts_by_reason() == {"empty label": 1}
    assert ingested.rows_read == 4


@pytest.mark.parametrize(
    ("text", "row", "match"),
    [
        ("\\\t100\t200\n0.1\t0.2\ta\n", 1, "without a label line"),
        ("0.1\t0.2\ta\n\\\t100\n", 2, "low and a high"),
        ("0.1\t0.2\ta\n0.5\n", 2, "onset, offset and label"),
        ("0.3\t0.2\ta\n", 1, "reversed"),
        ("-1\t0.2\ta\n", 1, "negative"),
        ("0.1\tabc\ta\n", 1, "not a number"),
    ],
)
def test_malformed_label_tracks(tmp_path, text, row, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as caught:
        read([path], AudacityOptions())
    assert (caught.value.file, caught.value.row) == (str(path), row)


def test_empty_and_binary_label_files(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read([empty], AudacityOptions())
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"0.1\t0.2\t\xff\xfe\x00a\n")
    with pytest.raises(InputError, match="utf-8"):
        read([binary], AudacityOptions())


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    run_on_bytes(read, AudacityOptions(), data, "x.txt")


_line = st.one_of(
    st.tuples(st.floats(), st.floats(), st.text(max_size=5)).map(
        lambda t: f"{t[0]}\t{t[1]}\t{t[2]}"
    ),
    st.tuples(st.floats(), st.floats()).map(lambda t: f"\\\t{t[0]}\t{t[1]}"),
    st.text(max_size=12),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_line, max_size=8))
def test_random_label_lines_raise_only_seqlm_errors(run_on_bytes, lines):
    result = run_on_bytes(read, AudacityOptions(), "\n".join(lines).encode(), "r.txt")
    if result is not None:
        assert result.rows_read == result.events.collect().height + len(result.rejects)
