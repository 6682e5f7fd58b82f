"""Reading annotation text files the way the field writes them.

Real files come with a UTF-8 or UTF-16 byte-order mark (Praat writes UTF-16 whenever a
label is not ASCII), Windows or old-Mac line ends, trailing blank lines and extra
columns. These helpers decode them, split delimited rows with their line numbers, and
parse numbers, raising `InputError` that names the file, line and column on bad input.
"""

from __future__ import annotations

import codecs
import csv
import math
from dataclasses import dataclass
from pathlib import Path

from seqlm.errors import InputError

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes, file: Path, encoding: str | None = None) -> str:
    """Bytes to text with `\\n` line ends.

    A byte-order mark decides the encoding; without one, `encoding` if given, else
    UTF-16 when every other byte is NUL (a BOM-less UTF-16 file), else UTF-8.
    """
    if not data.strip():
        raise InputError("file is empty", file=file)
    chosen = encoding
    for bom, name in _BOMS:
        if data.startswith(bom):
            chosen, data = name, data[len(bom) :]
            break
    else:
        if chosen is None:
            chosen = _guess_bomless_utf16(data) or "utf-8"
    try:
        text = data.decode(chosen)
    except LookupError:
        raise InputError(f"unknown text encoding {chosen!r}", file=file) from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"not valid {chosen} text (byte 0x{data[err.start]:02x} at byte offset {err.start}); "
            "pass --option encoding=<name> (e.g. latin-1) if the file uses another encoding",
            file=file,
            row=line,
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InputError("contains NUL characters: not a text file", file=file, row=line)
    if not text.strip():
        raise InputError("file is empty", file=file)
    return text


def _guess_bomless_utf16(data: bytes) -> str | None:
    sample = data[:4000]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nuls > 0.9 * half and even_nuls == 0:
        return "utf-16-le"
    if even_nuls > 0.9 * half and odd_nuls == 0:
        return "utf-16-be"
    return None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=path) from None


def read_text(path: Path, encoding: str | None = None) -> str:
    return decode_text(read_bytes(path), path, encoding)


@dataclass
class DelimitedRows:
    """A delimited text file: its header and its non-blank rows with their line numbers."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    delimiter: str

    def column(self, names: list[str]) -> str | None:
        """The first of `names` present in the header (exact match, then any case)."""
        for name in names:
            if name in self.header:
                return name
        lowered = {h.lower(): h for h in self.header}
        for name in names:
            if name.lower() in lowered:
                return lowered[name.lower()]
        return None

    def index(self, name: str) -> int:
        return self.header.index(name)


def read_delimited(path: Path, text: str, delimiter: str | None = None) -> DelimitedRows:
    """Split CSV-like text (comma, tab or semicolon, sniffed from the header line)."""
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), "")
    if delimiter is None:
        delimiter = max((",", "\t", ";"), key=first.count)
        if first.count(delimiter) == 0:
            delimiter = ","
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # blank lines, including trailing ones
            if header is None:
                header = [f.strip() for f in fields]
                continue
            rows.append((reader.line_num, fields))
    except csv.Error as err:
        raise InputError(
            f"not valid delimited text: {err}", file=path, row=reader.line_num
        ) from None
    if header is None:
        raise InputError("file is empty", file=path)
    return DelimitedRows(header=header, rows=rows, delimiter=delimiter)


def field_of(rows: DelimitedRows, fields: list[str], name: str, path: Path, line: int) -> str:
    """The value of column `name` in one row; a short row is a truncated file."""
    position = rows.index(name)
    if position >= len(fields):
        raise InputError(
            f"row has {len(fields)} field(s) but the header has {len(rows.header)} "
            "(truncated or misaligned row)",
            file=path,
            row=line,
            column=name,
        )
    return fields[position]


def parse_number(raw: str, file: Path, row: int, column: str | None) -> float:
    """A finite number, or an InputError naming where the bad value is."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise InputError(f"not a number: {shown!r}", file=file, row=row, column=column) from None
    if not math.isfinite(value):
        raise InputError(f"not a finite number: {text!r}", file=file, row=row, column=column)
    return value
