from __future__ import annotations

import codecs
import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.textio import (
    decode_text,
    field_of,
    parse_number,
    read_delimited,
)
from seqlm.errors import InputError

F = Path("f.txt")


@pytest.mark.parametrize(
    "data",
    [
        "a\tb\nä\n".encode(),
        codecs.BOM_UTF8 + "a\tb\nä\n".encode(),
        codecs.BOM_UTF16_LE + "a\tb\nä\n".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "a\tb\nä\n".encode("utf-16-be"),
        "a\tb\nä\n".encode("utf-16-le"),  # no BOM: recognised by its NUL bytes
        "a\tb\r\nä\r\n".encode(),
    ],
)
def test_decode_text_handles_boms_utf16_and_line_ends(data):
    assert decode_text(data, F) == "a\tb\nä\n"


def test_decode_text_errors_name_the_line():
    with pytest.raises(InputError, match="empty") as caught:
        decode_text(b" \n\n", F)
    assert caught.value.file == "f.txt"
    with pytest.raises(InputError, match="not valid utf-8") as caught:
        decode_text(b"ok\nok\n\xff\xfebad\n", F)
    assert caught.value.row == 3
    assert "encoding=" in str(caught.value)
    assert decode_text("é\n".encode("latin-1"), F, "latin-1") == "é\n"
    with pytest.raises(InputError, match="unknown text encoding"):
        decode_text(b"x", F, "no-such-codec")


def test_read_delimited_sniffs_the_delimiter_and_keeps_line_numbers():
    table = read_delimited(F, "onset\toffset\tlabel\n\n0.1\t0.2\ta\n0.3\t0.4\tb\n\n\n")
    assert table.delimiter == "\t"
    assert table.header == ["onset", "offset", "label"]
    assert table.rows == [(3, ["0.1", "0.2", "a"]), (4, ["0.3", "0.4", "b"])]
    assert table.column(["Label", "x"]) == "label"  # any case
    assert table.column(["x"]) is None


def test_short_row_is_reported_with_its_line_and_column():
    table = read_delimited(F, "onset_s,offset_s,label\n0.1,0.2,a\n0.3,0.4\n")
    line, fields = table.rows[1]
    with pytest.raises(InputError, match="truncated") as caught:
        field_of(table, fields, "label", F, line)
    assert (caught.value.row, caught.value.column) == (3, "label")


def test_parse_number_refuses_text_and_non_finite_values():
    assert parse_number(" 1.5e-3 ", F, 2, "onset") == pytest.approx(0.0015)
    for bad in ["abc", "", "nan", "inf"]:
        with pytest.raises(InputError) as caught:
            parse_number(bad, F, 2, "onset")
        assert (caught.value.row, caught.value.column) == (2, "onset")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_decode_and_split_raise_only_input_errors(data):
    with contextlib.suppress(InputError):
        read_delimited(F, decode_text(data, F))
