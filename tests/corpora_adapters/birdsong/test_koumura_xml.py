from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.koumura_xml import KoumuraOptions, read
from seqlm.errors import InputError

# The layout of Koumura & Okanoya's BirdsongRecognition `Bird0/Annotation.xml`: two
# sequences in 0.wav (listed out of time order here), one in 1.wav; positions in samples.
ANNOTATION = """<?xml version="1.0" encoding="utf-8"?>
<AnnotationSequence>
  <Sequence>
    <WaveFileName>0.wav</WaveFileName>
    <Position>320000</Position>
    <Length>16000</Length>
    <NumNote>2</NumNote>
    <Note>
      <Position>0</Position>
      <Length>1600</Length>
      <Label>c</Label>
    </Note>
    <Note>
      <Position>3200</Position>
      <Length>3200</Length>
      <Label>d</Label>
    </Note>
  </Sequence>
  <Sequence>
    <WaveFileName>0.wav</WaveFileName>
    <Position>32000</Position>
    <Length>43168</Length>
    <NumNote>3</NumNote>
    <Note>
      <Position>960</Position>
      <Length>2240</Length>
      <Label>a</Label>
    </Note>
    <Note>
      <Position>4480</Position>
      <Length>1920</Length>
      <Label>b</Label>
    </Note>
    <Note>
      <Position>8000</Position>
      <Length>2000</Length>
      <Label>ab2</Label>
    </Note>
  </Sequence>
  <Sequence>
    <WaveFileName>1.wav</WaveFileName>
    <Position>0</Position>
    <Length>6400</Length>
    <NumNote>1</NumNote>
    <Note>
      <Position>100</Position>
      <Length>200</Length>
      <Label>a</Label>
    </Note>
  </Sequence>
</AnnotationSequence>
"""


@pytest.fixture
def bird0(tmp_path):
    folder = tmp_path / "Bird0"
    folder.mkdir()
    path = folder / "Annotation.xml"
    path.write_text(ANNOTATION)
    return path


@pytest.mark.parametrize("root", ["AnnotationSequence", "Sequences"])
def test_sequences_are_bouts_with_times_in_seconds(bird0, root):
    # The dataset's files use <Sequences><NumSequence>…; its schema names the root
    # AnnotationSequence. Both read the same.
    text = ANNOTATION.replace("AnnotationSequence>", f"{root}>")
    bird0.write_text(text.replace(f"<{root}>", f"<{root}><NumSequence>3</NumSequence>"))
    ingested = read([bird0], KoumuraOptions())
    events = ingested.events.collect()
    assert ingested.rows_read == 6 == events.height
    assert events["group"].unique().to_list() == ["Bird0"]
    bouts = events.group_by("entity", maintain_order=True).agg("code")
    assert bouts.rows() == [
        ("Bird0/0#0", ["a", "b", "ab2"]),
        ("Bird0/0#1", ["c", "d"]),
        ("Bird0/1#0", ["a"]),
    ]
    first = events.row(0, named=True)
    assert first["bout_start_s"] == pytest.approx((32000 + 960) / 32000)
    assert first["value"] == pytest.approx(2240 / 32000)
    assert events["time"][1] == pytest.approx((4480 - 960) / 32000)
    assert first["recording"] == "Bird0/0"


def test_sample_rate_and_gap_options(bird0):
    events = read([bird0], KoumuraOptions(sample_rate=16000)).events.collect()
    assert events["bout_start_s"][0] == pytest.approx((32000 + 960) / 16000)
    split = read([bird0], KoumuraOptions(bout_gap_s=0.06)).events.collect()
    # Gaps in 0.wav's first sequence: a->b (4480 - 3200) / 32000 = 0.04 s, b->ab2 0.05 s;
    # in its second, c->d (3200 - 1600) / 32000 = 0.05 s. None splits at 0.06, and the
    # sequences given by the file stay apart.
    assert split["entity"].n_unique() == 3
    finer = read([bird0], KoumuraOptions(bout_gap_s=0.045)).events.collect()
    bouts = finer.group_by("entity", maintain_order=True).agg("code")["code"].to_list()
    assert bouts == [["a", "b"], ["ab2"], ["c"], ["d"], ["a"]]


def test_bird_from_option_or_file_name(tmp_path):
    path = tmp_path / "or60_annotation.xml"
    path.write_text(ANNOTATION)
    assert read([path], KoumuraOptions()).events.collect()["group"][0] == "or60"
    assert read([path], KoumuraOptions(bird="B7")).events.collect()["group"][0] == "B7"


@pytest.mark.parametrize(
    ("mangle", "row", "match"),
    [
        (lambda t: t[: len(t) // 2], None, "not well-formed"),
        (lambda t: t.replace("<Label>ab2</Label>", ""), 34, "no <Label>"),
        (
            lambda t: t.replace("<Position>4480</Position>", "<Position>-1</Position>"),
            29,
            "negative",
        ),
        (lambda t: t.replace("<Length>1920</Length>", "<Length>x</Length>"), 29, "not a number"),
        (lambda t: t.replace("<WaveFileName>1.wav</WaveFileName>", ""), 40, "WaveFileName"),
        (lambda t: "<Other/>", None, "no <Sequence>"),
    ],
)
def test_malformed_xml_names_the_line(bird0, mangle, row, match):
    bird0.write_text(mangle(ANNOTATION))
    with pytest.raises(InputError, match=match) as caught:
        read([bird0], KoumuraOptions())
    assert caught.value.file == str(bird0)
    if row is not None:
        assert caught.value.row == row


def test_empty_file(bird0):
    bird0.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read([bird0], KoumuraOptions())


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    run_on_bytes(read, KoumuraOptions(), data, "x.xml")


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_damaged_xml_raises_only_seqlm_errors(run_on_bytes, data):
    start = data.draw(st.integers(0, len(ANNOTATION)))
    end = data.draw(st.integers(start, len(ANNOTATION)))
    damaged = ANNOTATION[:start] + data.draw(st.text(max_size=12)) + ANNOTATION[end:]
    result = run_on_bytes(read, KoumuraOptions(), damaged.encode(), "d.xml")
    if result is not None:
        assert result.rows_read == result.events.collect().height + len(result.rejects)
