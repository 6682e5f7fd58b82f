"""Praat TextGrid files (text forms): one recording per file, one tier read.

Praat reads its long form (`xmin = 0`, `intervals [1]:` …) and short form (bare values
one per line) with one reader that only looks at three kinds of token: numbers, strings
in double quotes (a `"` inside is written `""`, and a string may span lines) and flags
such as `<exists>`. Everything else is a comment: labels like `xmin =`, bracketed
indices `[1]`, and the rest of a line after `!`. This module does the same, so both
forms and hand-edited files read alike. Files are UTF-8 or UTF-16 (Praat writes UTF-16
with a byte-order mark when a label is not ASCII); binary TextGrids are refused.

Tiers: `tier` picks one by name or by 1-based index; by default the first interval tier.
An interval tier's empty intervals (text empty or blank) are silences: gaps, not rows.
A point tier (`TextTier`) gives events with a time and no duration.

`rows_read` counts the non-empty intervals (or points) of the chosen tier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from seqlm.corpora_adapters.base import Ingested, register_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    EventBuilder,
    Syllable,
    TimedOptions,
    add_file_recording,
    check_times,
    read_files,
)
from seqlm.corpora_adapters.birdsong.textio import decode_text, read_bytes
from seqlm.errors import ConfigError, InputError

SUFFIXES = (".textgrid",)
# Praat's lexical items, found in one regex scan: a string in quotes (`""` inside is a
# quote; it may span lines), a flag `<exists>`, a comment (`!` to the end of the line, or
# a bracketed index with spaces inside), and a number, which must start a word (`abc123`
# and the `1` of `[1]` are not numbers). Labels such as `xmin =` match nothing, so the
# engine skips them without a Python step per word.
_TOKEN = re.compile(
    r'"(?P<string>(?:[^"]|"")*)"'
    r'|(?P<unclosed>")'
    r"|<(?P<flag>[^>\n]*)>"
    r"|(?P<comment>![^\n]*|\[[^\]\n]*\s[^\]\n]*\])"
    r"|(?<!\S)(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "number", "string" or "flag"
    value: float | str
    line: int


@dataclass
class Tier:
    kind: str  # "IntervalTier" or "TextTier"
    name: str
    index: int  # 1-based
    # (onset, offset or None, text, line of the text)
    items: list[tuple[float, float | None, str, int]]


def tokenize(text: str, file: Path) -> list[Token]:
    """Numbers, strings and flags of a Praat text file, each with its line number."""
    tokens: list[Token] = []
    line, counted_to = 1, 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "comment":
            continue
        line += text.count("\n", counted_to, match.start())
        counted_to = match.start()
        if kind == "string":
            tokens.append(Token("string", match.group("string").replace('""', '"'), line))
        elif kind == "number":
            tokens.append(Token("number", float(match.group("number")), line))
        elif kind == "flag":
            tokens.append(Token("flag", match.group("flag"), line))
        else:
            raise InputError(
                "string not closed (missing '\"'): truncated file?", file=file, row=line
            )
    return tokens


class _Reader:
    """Walks the token list, naming the line of anything unexpected."""

    def __init__(self, tokens: list[Token], file: Path) -> None:
        self.tokens, self.file, self.position = tokens, file, 0

    def next(self, kind: str, what: str) -> Token:
        if self.position >= len(self.tokens):
            last = self.tokens[-1].line if self.tokens else None
            raise InputError(f"file ends before {what}: truncated?", file=self.file, row=last)
        token = self.tokens[self.position]
        if token.kind != kind:
            raise InputError(
                f"expected {what} ({kind}), found {token.kind} {str(token.value)[:30]!r}",
                file=self.file,
                row=token.line,
            )
        self.position += 1
        return token

    def count(self, what: str) -> int:
        token = self.next("number", what)
        value = float(token.value)
        if value < 0 or value != int(value) or value > 10_000_000:
            raise InputError(
                f"{what} must be a count, got {value:g}", file=self.file, row=token.line
            )
        return int(value)


def parse_textgrid(text: str, file: Path) -> list[Tier]:
    """All tiers of a TextGrid in its long or short text form."""
    if text.lstrip().startswith("ooBinaryFile"):
        raise InputError("binary TextGrid: save it from Praat as a text file", file=file, row=1)
    reader = _Reader(tokenize(text, file), file)
    file_type = reader.next("string", "the header 'File type = \"ooTextFile\"'")
    object_class = reader.next("string", "the header 'Object class = \"TextGrid\"'")
    if not str(file_type.value).startswith("ooTextFile") or object_class.value != "TextGrid":
        raise InputError(
            f"not a Praat TextGrid text file (header {file_type.value!r}, {object_class.value!r})",
            file=file,
            row=file_type.line,
        )
    reader.next("number", "the TextGrid's xmin")
    reader.next("number", "the TextGrid's xmax")
    exists = reader.next("flag", "<exists>")
    if exists.value != "exists":
        return []
    tiers = []
    for index in range(1, reader.count("the number of tiers") + 1):
        kind_token = reader.next("string", f'tier {index} class ("IntervalTier")')
        kind = str(kind_token.value)
        if kind not in ("IntervalTier", "TextTier"):
            raise InputError(
                f"unknown tier class {kind!r} (expected IntervalTier or TextTier)",
                file=file,
                row=kind_token.line,
            )
        name = str(reader.next("string", f"tier {index} name").value)
        reader.next("number", f"tier {index} xmin")
        reader.next("number", f"tier {index} xmax")
        size = reader.count(f"the number of items in tier {index}")
        items: list[tuple[float, float | None, str, int]] = []
        for item in range(1, size + 1):
            where = f"{'interval' if kind == 'IntervalTier' else 'point'} {item} of tier {name!r}"
            start = float(reader.next("number", f"the start of {where}").value)
            end: float | None = None
            if kind == "IntervalTier":
                end = float(reader.next("number", f"the end of {where}").value)
            label = reader.next("string", f"the text of {where}")
            items.append((start, end, str(label.value), label.line))
        tiers.append(Tier(kind, name, index, items))
    return tiers


def choose_tier(tiers: list[Tier], tier: int | str | None, file: Path) -> Tier:
    names = [t.name for t in tiers]
    if not tiers:
        raise InputError("TextGrid has no tiers", file=file)
    if tier is None:
        for candidate in tiers:
            if candidate.kind == "IntervalTier":
                return candidate
        return tiers[0]
    if isinstance(tier, int):
        if not 1 <= tier <= len(tiers):
            raise ConfigError(f"{file}: tier {tier} does not exist; tiers 1..{len(tiers)}: {names}")
        return tiers[tier - 1]
    for candidate in tiers:
        if candidate.name == tier:
            return candidate
    raise ConfigError(f"{file}: no tier named {tier!r}; tiers: {names}")


@dataclass
class TextGridOptions(TimedOptions):
    """`tier`: the tier to read, by name or 1-based index (default: first interval
    tier). `encoding`: for files without a byte-order mark that are not UTF-8."""

    tier: int | str | None = field(
        default=None,
        metadata={
            "help": "The tier to read, by name or 1-based index; null = the first interval tier."
        },
    )
    encoding: str | None = field(
        default=None,
        metadata={"help": "Text encoding for files without a byte-order mark that are not UTF-8."},
    )


def tier_syllables(tier: Tier, file: Path) -> list[Syllable]:
    """The labelled items of a tier; empty intervals are silences, not rows."""
    syllables = []
    for start, end, text, line in tier.items:
        label = text.strip()
        if not label:
            continue
        check_times(start, end, file, line, ("xmin", "xmax") if end is not None else ("time",) * 2)
        syllables.append(Syllable(label, start, end, line))
    return syllables


@register_adapter(
    "textgrid",
    options=TextGridOptions,
    description="Praat TextGrid (long or short text form, UTF-8/UTF-16; one tier)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
)
def read(inputs: list[Path], options: TextGridOptions) -> Ingested:
    """Read TextGrid files (or folders of `.TextGrid` files), one recording each."""
    return read_files("textgrid", inputs, options, SUFFIXES, "TextGrid", read_textgrid_file)


def read_textgrid_file(path: Path, options: TextGridOptions, builder: EventBuilder) -> None:
    data = read_bytes(path)
    if data.startswith(b"ooBinaryFile"):
        raise InputError("binary TextGrid: save it from Praat as a text file", file=path)
    tiers = parse_textgrid(decode_text(data, path, options.encoding), path)
    tier = choose_tier(tiers, options.tier, path)
    add_file_recording(builder, path, SUFFIXES, tier_syllables(tier, path), options, tier.name)
