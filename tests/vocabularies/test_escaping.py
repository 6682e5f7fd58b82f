"""Reversible escaping: every source string maps to one token part and back."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.vocabularies.escaping import escape_part, escaped, unescape_part
from seqlm.vocabularies.scheme import is_reserved

# Text drawn from the characters that matter here: separators, escapes, whitespace,
# controls, the space mark, brackets and bin look-alikes.
TRICKY = st.text(
    alphabet=st.sampled_from(list("aQ3/[]\\ \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x00\x85▁\u3000\u2028é")),
    max_size=12,
)
# Segments spelling seqlm's marker words, joined by `//` and mixed with plain segments.
MARKERS = st.lists(
    st.sampled_from(["UNK", "PAD", "BOS", "EOS", "SEP", "UNKNOWN", "unk", "x", "", "\\x55NK"]),
    min_size=1,
    max_size=5,
).map("//".join)


@given(st.text(max_size=30) | TRICKY | MARKERS)
@settings(max_examples=400, deadline=None)
def test_round_trip_and_no_whitespace(text):
    part = escape_part(text)
    assert unescape_part(part) == text
    assert not any(c.isspace() for c in part)
    assert not any(unicodedata.category(c) == "Cc" for c in part)


@given(st.lists(st.text(max_size=10) | TRICKY | MARKERS, min_size=2, max_size=8, unique=True))
@settings(max_examples=200, deadline=None)
def test_distinct_inputs_stay_distinct(texts):
    parts = [escape_part(t) for t in texts]
    assert len(set(parts)) == len(parts)


@pytest.mark.parametrize(
    "codes",
    [
        ["a b", "a\tb", "a\nb", "a▁b", "a\u00a0b", "a\u2028b"],
        ["x\x1cy", "x\x1dy", "x\x1ey", "x\x1fy", "x y"],
        ["a\\x09b", "a\tb"],  # a literal backslash escape vs the character it spells
    ],
)
def test_look_alikes_differ(codes):
    parts = [escape_part(c) for c in codes]
    assert len(set(parts)) == len(codes)
    assert [unescape_part(p) for p in parts] == codes


@pytest.mark.parametrize("code", ["[PAD]", "[TIME//5m]", "VALUE//Q3", "LAB//[UNK]", "[UNK]"])
def test_codes_never_spell_scheme_tokens(code):
    assert not is_reserved(escape_part(code))


@pytest.mark.parametrize(
    ("code", "part"),
    [
        ("A//Q3", "A//\\x513"),  # could be code A in bin 3
        ("A//Q10", "A//\\x5110"),
        ("A//Q11", "A//Q11"),  # above value_bins = 10: never a bin
        ("A//Q03", "A//Q03"),  # a bin number has no leading zero
        ("DIAGNOSIS//ICD//10//Q620", "DIAGNOSIS//ICD//10//Q620"),  # ICD-10 chapter Q
        ("VALUE//Q99", "VALUE//\\x5199"),  # never the separate-mode value token
    ],
)
def test_bin_look_alikes_are_escaped_only_where_they_could_be_bins(code, part):
    assert escape_part(code) == part
    assert unescape_part(part) == code


def test_polars_expression_matches_python():
    texts = ["A//Q3", "a b", "[x", "x//[y", "p\\q", "LAB//51003//ng/mL"]
    frame = pl.DataFrame({"t": texts}).select(escaped(pl.col("t")))
    assert frame["t"].to_list() == [escape_part(t) for t in texts]
    assert escape_part("LAB//51003//ng/mL") == "LAB//51003//ng/mL"


@pytest.mark.parametrize(
    ("code", "part"),
    [
        ("LAB//224650//UNK", "LAB//224650//\\x55NK"),  # MIMIC's unit "UNK" (issue 20)
        ("UNK//UNK", "\\x55NK//\\x55NK"),  # adjacent segments share the `//`
        ("X//PAD//BOS", "X//\\x50AD//\\x42OS"),
        ("EOS", "\\x45OS"),
        ("SEP//1", "\\x53EP//1"),
        ("UNKNOWN//unk//UNKX", "UNKNOWN//unk//UNKX"),  # only whole segments, as written
    ],
)
def test_segments_spelling_marker_words_are_escaped(code, part):
    assert escape_part(code) == part
    assert unescape_part(part) == code


@given(MARKERS)
@settings(max_examples=200, deadline=None)
def test_no_segment_reads_as_a_marker_word(code):
    assert not set(escape_part(code).split("//")) & {"UNK", "PAD", "BOS", "EOS", "SEP"}
