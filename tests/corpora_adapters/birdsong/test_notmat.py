from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.notmat import NotMatOptions, read
from seqlm.errors import InputError

SONG = "gy6or6_baseline_230312_0808.138.cbin.not.mat"
LABELS = "iiiiabcdeefghjkiabcdeefghjkiabcdeefghjkiabcdeefgiiiiiiabcdeefghjkiabcdeefghjki"


def test_evsonganaly_song(examples):
    ingested = read([examples / SONG], NotMatOptions())
    events = ingested.events.collect()
    assert ingested.rows_read == 78 == events.height
    assert "".join(events["code"].to_list()) == LABELS
    assert events["entity"].unique().to_list() == ["gy6or6_baseline_230312_0808.138.cbin#0"]
    assert events["group"].unique().to_list() == ["gy6or6"]
    # Onsets and offsets are milliseconds in the file, seconds here.
    assert events["bout_start_s"][0] == pytest.approx(1.27778125)
    assert events["value"][0] == pytest.approx((1351.21875 - 1277.78125) / 1000)
    assert events["time"][1] == pytest.approx((1452.46875 - 1277.78125) / 1000)
    assert events["time"][-1] == pytest.approx((10488.59375 - 1277.78125) / 1000)


def test_longest_pause_splits_the_song_with_a_shorter_gap(examples):
    # The longest pause is 404.84 ms (between segments 48 and 49).
    events = read([examples / SONG], NotMatOptions(bout_gap_s=0.4)).events.collect()
    sizes = events.group_by("entity", maintain_order=True).len()["len"].to_list()
    assert sizes == [48, 30]


def test_drop_intro_rejects_introductory_notes(examples):
    ingested = read([examples / SONG], NotMatOptions(drop_intro=True))
    assert ingested.rejects.counts_by_reason() == {"introductory note": LABELS.count("i")}
    assert ingested.events.collect().height == 78 - LABELS.count("i")


def _save(tmp_path, name="b1_x.not.mat", **variables):
    path = tmp_path / name
    base = {
        "Fs": 32000,
        "labels": "ab",
        "onsets": np.array([[10.0], [200.0]]),
        "offsets": np.array([[60.0], [260.0]]),
        "min_dur": 10,
        "min_int": 6,
        "threshold": 1500,
        "sm_win": 2,
    }
    base.update(variables)
    scipy.io.savemat(path, {k: v for k, v in base.items() if v is not None})
    return path


def test_single_segment_and_empty_song(tmp_path):
    one = _save(tmp_path, labels="a", onsets=np.array([5.0]), offsets=np.array([25.0]))
    events = read([one], NotMatOptions()).events.collect()
    assert events["code"].to_list() == ["a"]
    assert events["value"][0] == pytest.approx(0.02)
    none = _save(
        tmp_path, "b1_y.not.mat", labels="", onsets=np.zeros((0, 1)), offsets=np.zeros((0, 1))
    )
    assert read([none], NotMatOptions()).rows_read == 0


@pytest.mark.parametrize(
    ("variables", "column", "row", "match"),
    [
        ({"offsets": None}, "offsets", None, "no 'offsets'"),
        ({"labels": "abc"}, "labels", None, "3 labels but 2 onsets"),
        ({"onsets": np.array([[-5.0], [200.0]])}, "onsets", 1, "negative"),
        ({"offsets": np.array([[60.0], [150.0]])}, "offsets", 2, "reversed"),
        ({"onsets": np.array([[np.nan], [200.0]])}, "onsets", 1, "non-finite"),
    ],
)
def test_malformed_notmat_names_the_variable(tmp_path, variables, column, row, match):
    path = _save(tmp_path, **variables)
    with pytest.raises(InputError, match=match) as caught:
        read([path], NotMatOptions())
    assert (caught.value.file, caught.value.column, caught.value.row) == (str(path), column, row)


def test_truncated_empty_and_foreign_files(tmp_path, examples):
    data = (examples / SONG).read_bytes()
    for name, content in [
        ("t.not.mat", data[: len(data) // 2]),
        ("e.not.mat", b""),
        ("c.not.mat", b"onsets,offsets\n1,2\n"),
        ("h.not.mat", b"MATLAB 7.3 MAT-file" + b"\x00" * 600),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError) as caught:
            read([path], NotMatOptions())
        assert caught.value.file == str(path)
        assert "\n" not in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    run_on_bytes(read, NotMatOptions(), data, "x.not.mat")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_corrupted_real_file_raises_only_seqlm_errors(run_on_bytes, examples, data):
    original = bytearray((examples / SONG).read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    result = run_on_bytes(read, NotMatOptions(), bytes(original), "c.not.mat")
    if result is not None:
        assert result.rows_read == result.events.collect().height + len(result.rejects)
