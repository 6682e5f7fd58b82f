from __future__ import annotations

import codecs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.textgrid import TextGridOptions, parse_textgrid, read
from seqlm.errors import ConfigError, InputError

AVO = "AVO-maea-basic.TextGrid"
SAMOAN = ["'o", "Sione", "na", "tosoa", "le", "maea", "analeila\\-^"]


def to_short_form(long_text: str) -> str:
    """Praat's short text form of a long-form TextGrid: the bare values, one per line."""
    lines = long_text.splitlines()
    out = lines[:2] + [""]
    for line in lines[2:]:
        stripped = line.strip()
        if " = " in stripped:
            out.append(stripped.split(" = ", 1)[1].strip())
        elif stripped.startswith("tiers?"):
            out.append("<exists>")
    return "\n".join(out) + "\n"


def _events(path, **options):
    ingested = read([path], TextGridOptions(**options))
    return ingested, ingested.events.collect()


def test_long_form_default_tier_is_the_first_interval_tier(examples):
    ingested, events = _events(examples / AVO, bout_gap_s=None)
    assert ingested.rows_read == 7
    assert events["code"].to_list() == SAMOAN
    assert events["entity"].unique().to_list() == ["AVO-maea-basic#0"]
    assert events["time"][1] == pytest.approx(0.051451575248407266)
    assert events["value"][0] == pytest.approx(0.051451575248407266)
    assert events["value"][-1] == pytest.approx(2.4360509767904546 - 1.70760078178904)


def test_tiers_by_name_and_index_and_point_tiers(examples):
    tiers = parse_textgrid((examples / AVO).read_text(), examples / AVO)
    assert [(t.kind, t.name, len(t.items)) for t in tiers] == [
        ("TextTier", "Tones", 5),
        ("IntervalTier", "Samoan", 7),
        ("IntervalTier", "Gloss", 7),
    ]
    _, gloss = _events(examples / AVO, tier="Gloss")
    assert gloss["code"].to_list()[:3] == ["PRES", "Sione", "PAST"]
    _, by_index = _events(examples / AVO, tier=2)
    assert by_index["code"].to_list() == SAMOAN
    _, tones = _events(examples / AVO, tier="Tones", bout_gap_s=None)
    assert tones["code"].to_list() == ["L+H*", "H-", "L+H*", "H-", "L+!H-"]
    assert tones["value"].null_count() == 5  # points have no duration
    assert tones["bout_start_s"][0] == pytest.approx(0.4351780385722748)
    with pytest.raises(ConfigError, match="no tier named 'Birds'"):
        _events(examples / AVO, tier="Birds")
    with pytest.raises(ConfigError, match="tier 4 does not exist"):
        _events(examples / AVO, tier=4)


def test_short_form_and_utf16_read_like_the_long_form(examples, tmp_path):
    long_text = (examples / AVO).read_text()
    _, expected = _events(examples / AVO)
    short = tmp_path / "short.TextGrid"
    short.write_text(to_short_form(long_text))
    assert short.read_text().splitlines()[3:6] == ["0", "2.4360509767904546", "<exists>"]
    for path, data in [
        (short, None),
        (tmp_path / "le.TextGrid", codecs.BOM_UTF16_LE + long_text.encode("utf-16-le")),
        (tmp_path / "be.TextGrid", codecs.BOM_UTF16_BE + long_text.encode("utf-16-be")),
        (tmp_path / "crlf.TextGrid", long_text.replace("\n", "\r\n").encode() + b"\r\n\r\n"),
    ]:
        if data is not None:
            path.write_bytes(data)
        _, events = _events(path)
        assert events["code"].to_list() == expected["code"].to_list()
        assert events["time"].to_list() == pytest.approx(expected["time"].to_list())


GRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 3
tiers? <exists>
size = 1
item []:
    item [1]:
        class = "IntervalTier"
        name = "syllables"
        xmin = 0
        xmax = 3
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = ""
        intervals [2]:
            xmin = 0.5
            xmax = 0.6
            text = "say ""hi"""
        intervals [3]:
            xmin = 0.6
            xmax = 0.7
            text = "ké"
        intervals [4]:
            xmin = 0.7
            xmax = 1.5
            text = "   "
        intervals [5]:
            xmin = 1.5
            xmax = 1.6
            text = "SIL"
        intervals [6]:
            xmin = 1.6
            xmax = 3
            text = "b"
'''


def test_empty_intervals_are_gaps_and_quotes_are_unescaped(tmp_path):
    path = tmp_path / "o12_song.TextGrid"
    path.write_bytes(codecs.BOM_UTF16_BE + GRID.encode("utf-16-be"))
    ingested, events = _events(path)
    # Empty and blank intervals are not rows; the SIL interval is a row, rejected.
    assert ingested.rows_read == 4
    assert ingested.rejects.counts_by_reason() == {"silence label": 1}
    assert events["code"].to_list() == ['say "hi"', "ké", "b"]
    assert events["entity"].to_list() == ["o12_song#0", "o12_song#0", "o12_song#1"]
    assert events["group"][0] == "o12"


def test_praat_reader_tolerances_comments_units_and_words(tmp_path):
    # What Praat itself accepts: comments after `!`, values with units (`0.5s`), several
    # values on a line, and words such as `abc123` that are not numbers.
    text = (
        'File type = "ooTextFile"\nObject class = "TextGrid"\n! made by hand\n'
        "0s 2s <exists> 1 ! xmin xmax tiers size\n"
        '"IntervalTier" "song" 0 2 abc123 2\n'
        '0 0.5s "a" ! first\n0.5 2 "b"\n'
    )
    path = tmp_path / "hand.TextGrid"
    path.write_text(text)
    events = read([path], TextGridOptions()).events.collect()
    assert events["code"].to_list() == ["a", "b"]
    assert events["value"].to_list() == pytest.approx([0.5, 1.5])


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda t: t[: len(t) // 2], "truncated"),
        (lambda t: t.replace('text = "b"', 'text = "b'), "not closed"),
        (lambda t: t.replace('"TextGrid"', '"Pitch"'), "not a Praat TextGrid"),
        (lambda t: t.replace("xmax = 0.6\n", "xmax = 0.4\n"), "reversed"),
        (lambda t: t.replace("xmin = 1.6", "xmin = -1.6"), "negative"),
        (lambda t: t.replace('"IntervalTier"', '"Interval"'), "unknown tier class"),
    ],
)
def test_malformed_textgrids_name_the_line(tmp_path, mangle, match):
    path = tmp_path / "bad.TextGrid"
    path.write_text(mangle(GRID))
    with pytest.raises(InputError, match=match) as caught:
        read([path], TextGridOptions())
    assert caught.value.file == str(path)
    assert caught.value.row is not None


def test_empty_latin1_and_binary_textgrids(tmp_path):
    empty = tmp_path / "e.TextGrid"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read([empty], TextGridOptions())
    latin = tmp_path / "l.TextGrid"
    latin.write_bytes(GRID.encode("latin-1"))
    with pytest.raises(InputError, match="utf-8") as caught:
        read([latin], TextGridOptions())
    assert caught.value.row == 26  # the line of "ké"
    assert "ké" in read([latin], TextGridOptions(encoding="latin-1")).events.collect()["code"]
    binary = tmp_path / "b.TextGrid"
    binary.write_bytes(b"ooBinaryFile\x08TextGrid\x00\x00")
    with pytest.raises(InputError, match="binary TextGrid"):
        read([binary], TextGridOptions())


def test_folders_are_read_recursively(examples, tmp_path):
    (tmp_path / "day1").mkdir()
    (tmp_path / "day1" / "a.TextGrid").write_text(GRID)
    (tmp_path / "b.textgrid").write_text(GRID)
    (tmp_path / "notes.txt").write_text("not a grid")
    ingested = read([tmp_path], TextGridOptions())
    assert ingested.events.collect()["source_file"].unique().sort().to_list() == [
        "a.TextGrid",
        "b.textgrid",
    ]


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    run_on_bytes(read, TextGridOptions(), data, "x.TextGrid")


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_damaged_grids_raise_only_seqlm_errors(run_on_bytes, data):
    start = data.draw(st.integers(0, len(GRID)))
    end = data.draw(st.integers(start, len(GRID)))
    noise = data.draw(st.text(max_size=10))
    damaged = GRID[:start] + noise + GRID[end:]
    result = run_on_bytes(read, TextGridOptions(), damaged.encode(), "d.TextGrid")
    if result is not None:
        assert result.rows_read == result.events.collect().height + len(result.rejects)
