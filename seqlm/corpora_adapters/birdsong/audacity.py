"""Audacity label tracks (`File > Export > Labels`): one recording per file.

Standard form: one label per line, `onset<TAB>offset<TAB>label` in seconds (a point
label has onset == offset; the label text may be empty). Extended form: after a label
line, a line starting with `\\` carries the label's frequency range
(`\\<TAB>low_Hz<TAB>high_Hz`); it belongs to the label above and is not a row of its own
(frequencies are checked but not kept: the event table has no place for them).
Tolerated: a BOM, CRLF, blank lines, spaces instead of tabs, a decimal comma
(`1,25` from Audacity in some locales).

`rows_read` counts label lines.
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
from seqlm.corpora_adapters.birdsong.textio import parse_number, read_text
from seqlm.errors import InputError

SUFFIXES = (".txt",)
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


@dataclass
class AudacityOptions(TimedOptions):
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of the files; null = UTF-8 (with or without a byte-order mark)."
        },
    )


def _number(raw: str, file: Path, line: int, column: str) -> float:
    text = raw.strip()
    if _DECIMAL_COMMA.match(text):
        text = text.replace(",", ".")
    return parse_number(text, file, line, column)


def parse_label_track(path: Path, text: str) -> list[Syllable]:
    """The label lines of an Audacity label track, with frequency lines checked."""
    syllables: list[Syllable] = []
    previous_was_label = False
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if line.startswith("\\"):
            if not previous_was_label:
                raise InputError(
                    "frequency line (starting with '\\') without a label line before it",
                    file=path,
                    row=line_number,
                )
            parts = line[1:].split()
            if len(parts) < 2:
                raise InputError(
                    "frequency line needs a low and a high frequency",
                    file=path,
                    row=line_number,
                    column="high_frequency",
                )
            _number(parts[0], path, line_number, "low_frequency")
            _number(parts[1], path, line_number, "high_frequency")
            previous_was_label = False
            continue
        parts = line.split("\t", 2) if "\t" in line else line.strip().split(None, 2)
        if len(parts) < 2:
            raise InputError(
                "a label line needs onset, offset and label separated by tabs",
                file=path,
                row=line_number,
                column="offset",
            )
        onset = _number(parts[0], path, line_number, "onset")
        offset = _number(parts[1], path, line_number, "offset")
        check_times(onset, offset, path, line_number, ("onset", "offset"))
        label = parts[2].strip() if len(parts) > 2 else ""
        syllables.append(Syllable(label, onset, offset, line_number))
        previous_was_label = True
    return syllables


@register_adapter(
    "audacity",
    options=AudacityOptions,
    description="Audacity label track (onset<TAB>offset<TAB>label; extended with '\\' lines)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
    aliases=("aud-seq",),
)
def read(inputs: list[Path], options: AudacityOptions) -> Ingested:
    """Read Audacity label files (or folders of `.txt` files), one recording each."""
    return read_files("audacity", inputs, options, SUFFIXES, "Audacity label", read_label_file)


def read_label_file(path: Path, options: AudacityOptions, builder: EventBuilder) -> None:
    syllables = parse_label_track(path, read_text(path, options.encoding))
    add_file_recording(builder, path, SUFFIXES, syllables, options, "label")
