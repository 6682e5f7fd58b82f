"""crowsetta "simple-seq" CSV: one file per recording, `onset_s,offset_s,label`.

The same reader takes the field's variants through options: other column names
(`onset_column`, …), times in milliseconds or samples (`time_unit`, `sample_rate`), tab or
semicolon delimiters, extra columns (ignored). DAS exports are simple-seq files with
`name,start_seconds,stop_seconds` (and an unnamed index column) whose "seconds" hold
milliseconds and whose rows are sorted by label rather than time: those columns are
recognised, and the unit check refuses to read milliseconds as seconds (pass
`time_unit=ms`). Rows are sorted by onset, so an event's `order` follows its onset.

`rows_read` counts data rows (blank lines are not rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seqlm.corpora_adapters.base import Ingested, register_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    EventBuilder,
    Syllable,
    TimedOptions,
    add_file_recording,
    check_seconds_plausible,
    check_times,
    read_files,
    require_positive,
)
from seqlm.corpora_adapters.birdsong.textio import (
    DelimitedRows,
    field_of,
    parse_number,
    read_delimited,
    read_text,
)
from seqlm.errors import ConfigError, InputError

TimeUnit = Literal["s", "ms", "samples"]

SUFFIXES = (".csv", ".txt")
# Column names tried in order when no name is given, each with the unit it implies.
ONSET_COLUMNS: dict[str, TimeUnit] = {
    "onset_s": "s",
    "onset_ms": "ms",
    "onset_sample": "samples",
    "onset_samples": "samples",
    "start_seconds": "s",
    "onset": "s",
    "start": "s",
}
OFFSET_COLUMNS: dict[str, TimeUnit] = {
    "offset_s": "s",
    "offset_ms": "ms",
    "offset_sample": "samples",
    "offset_samples": "samples",
    "stop_seconds": "s",
    "offset": "s",
    "stop": "s",
    "end": "s",
}
LABEL_COLUMNS = ["label", "name", "syllable", "labels"]


@dataclass
class SimpleSeqOptions(TimedOptions):
    """`onset_column`/`offset_column`/`label_column`: names in the header (default: the
    first of the usual names present). `time_unit`: s, ms or samples (default: implied by
    the column name, seconds otherwise); `sample_rate` (Hz) is needed for samples.
    `check_units`: refuse "seconds" that look like milliseconds (the DAS trap)."""

    onset_column: str | None = field(
        default=None,
        metadata={
            "help": "Header name of the onset column (default: the first usual name present)."
        },
    )
    offset_column: str | None = field(
        default=None,
        metadata={
            "help": "Header name of the offset column (default: the first usual name present)."
        },
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Header name of the label column (default: the first usual name present)."
        },
    )
    time_unit: TimeUnit | None = field(
        default=None,
        metadata={
            "help": "s, ms or samples; default: implied by the column name, seconds otherwise."
        },
    )
    sample_rate: float | None = field(
        default=None, metadata={"help": "Hz; needed when times are in samples."}
    )
    delimiter: str | None = field(
        default=None,
        metadata={"help": "Field separator, one character; null = detected from the file."},
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of the files; null = UTF-8 (with or without a byte-order mark)."
        },
    )
    check_units: bool = field(
        default=True,
        metadata={"help": "Refuse 'seconds' that look like milliseconds (the DAS trap)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("sample_rate", self.sample_rate)
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"option delimiter must be one character, got {self.delimiter!r}")


def seconds_per_unit(unit: TimeUnit, sample_rate: float | None, file: Path) -> float:
    if unit == "s":
        return 1.0
    if unit == "ms":
        return 1e-3
    if sample_rate is None:
        raise ConfigError(f"{file}: times are in samples; pass --option sample_rate=<Hz>")
    return 1.0 / sample_rate


def find_column(
    table: DelimitedRows, given: str | None, candidates: list[str], role: str, file: Path
) -> str:
    name = table.column([given] if given else candidates)
    if name is None:
        wanted = repr(given) if given else " or ".join(repr(c) for c in candidates)
        raise InputError(
            f"no {role} column: expected {wanted}; the header has {table.header}",
            file=file,
            row=1,
            column=given or candidates[0],
        )
    return name


def timed_rows(
    table: DelimitedRows,
    file: Path,
    onset: str,
    offset: str,
    label: str,
    scale: float,
    rows: list[tuple[int, list[str]]] | None = None,
) -> list[Syllable]:
    """Parse the onset, offset and label of each row into a `Syllable` (seconds)."""
    syllables = []
    for line, fields in table.rows if rows is None else rows:
        # Take all three fields first: a short (truncated) row is reported as such.
        raw_onset, raw_offset, text = (
            field_of(table, fields, name, file, line) for name in (onset, offset, label)
        )
        start = parse_number(raw_onset, file, line, onset)
        stop = parse_number(raw_offset, file, line, offset)
        check_times(start, stop, file, line, (onset, offset))
        text = text.strip()
        syllables.append(Syllable(text, start * scale, stop * scale, line))
    return syllables


def read_simple_seq_file(path: Path, options: SimpleSeqOptions, builder: EventBuilder) -> None:
    table = read_delimited(path, read_text(path, options.encoding), options.delimiter)
    onset = find_column(table, options.onset_column, list(ONSET_COLUMNS), "onset", path)
    offset = find_column(table, options.offset_column, list(OFFSET_COLUMNS), "offset", path)
    label = find_column(table, options.label_column, LABEL_COLUMNS, "label", path)
    unit = options.time_unit or ONSET_COLUMNS.get(onset.lower(), "s")
    syllables = timed_rows(
        table, path, onset, offset, label, seconds_per_unit(unit, options.sample_rate, path)
    )
    if unit == "s" and options.check_units:
        check_seconds_plausible(syllables, path, onset)
    add_file_recording(builder, path, SUFFIXES, syllables, options, label)


@register_adapter(
    "simple-seq",
    options=SimpleSeqOptions,
    description="crowsetta simple-seq CSV (onset_s,offset_s,label; ms/sample variants; DAS)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
)
def read(inputs: list[Path], options: SimpleSeqOptions) -> Ingested:
    """Read simple-seq CSV files (or folders of `.csv`/`.txt` files), one recording each."""
    return read_files("simple-seq", inputs, options, SUFFIXES, "simple-seq", read_simple_seq_file)
