"""crowsetta "generic-seq" CSV: many recordings in one file.

Columns (crowsetta 4/5): `label`, `onset_s`/`offset_s` and/or `onset_sample`/
`offset_sample`, `notated_path` (the audio file annotated), `annot_path`, `sequence`,
`annotation` (one number per annotated recording). Seconds are used when present;
sample-only files need `sample_rate`.

Each annotation is a recording: its name is the stem of `notated_path` (the part after
the last `/` or `\\`, without its last suffix), or `<csv stem>-<annotation>` when there is
no notated file or the same one is annotated twice. The bird id (`group`) is found by
`bird_pattern` in the notated file's name (song files are named after the bird, e.g.
`lbr3009_0005_2017_04_27.wav` -> `lbr3009`), else in the CSV file's name.

`rows_read` counts data rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seqlm.corpora_adapters.base import Ingested, register_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    EventBuilder,
    TimedOptions,
    bird_from_name,
    check_seconds_plausible,
    read_files,
    recording_name,
    require_positive,
)
from seqlm.corpora_adapters.birdsong.simple_seq import find_column, timed_rows
from seqlm.corpora_adapters.birdsong.textio import (
    DelimitedRows,
    field_of,
    read_delimited,
    read_text,
)
from seqlm.errors import ConfigError, InputError

SUFFIXES = (".csv",)
_NO_PATH = {"", "none", "nan", "null"}


@dataclass
class GenericSeqOptions(TimedOptions):
    """`sample_rate` (Hz): needed only for files with sample columns and no seconds.
    `time_unit`: what `onset_s`/`offset_s` really hold (ms for mislabelled exports).
    `check_units`: refuse "seconds" that look like milliseconds."""

    sample_rate: float | None = field(
        default=None,
        metadata={"help": "Hz; needed only for files with sample columns and no seconds."},
    )
    time_unit: Literal["s", "ms"] = field(
        default="s",
        metadata={"help": "What onset_s/offset_s really hold: s, or ms for mislabelled exports."},
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of the files; null = UTF-8 (with or without a byte-order mark)."
        },
    )
    check_units: bool = field(
        default=True, metadata={"help": "Refuse 'seconds' that look like milliseconds."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("sample_rate", self.sample_rate)


def _time_columns(
    table: DelimitedRows, path: Path, options: GenericSeqOptions
) -> tuple[str, str, float, bool]:
    """(onset, offset, seconds per unit, read as seconds): seconds columns, else samples."""
    onset_s, offset_s = table.column(["onset_s"]), table.column(["offset_s"])
    if onset_s and offset_s:
        as_seconds = options.time_unit == "s"
        return onset_s, offset_s, 1.0 if as_seconds else 1e-3, as_seconds
    onset_n, offset_n = table.column(["onset_sample"]), table.column(["offset_sample"])
    if onset_n and offset_n:
        if options.sample_rate is None:
            raise ConfigError(
                f"{path}: times are in samples (onset_sample, offset_sample); "
                "pass --option sample_rate=<Hz>"
            )
        return onset_n, offset_n, 1.0 / options.sample_rate, False
    missing = "offset_s" if onset_s else "onset_s"
    raise InputError(
        "generic-seq needs onset_s and offset_s (or onset_sample and offset_sample); "
        f"the header has {table.header}",
        file=path,
        row=1,
        column=missing,
    )


def _notated_stem(raw: str) -> str | None:
    name = re.split(r"[/\\]", raw.strip())[-1]
    if name.lower() in _NO_PATH:
        return None
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def read_generic_seq_file(path: Path, options: GenericSeqOptions, builder: EventBuilder) -> None:
    table = read_delimited(path, read_text(path, options.encoding))
    label = find_column(table, None, ["label"], "label", path)
    onset, offset, scale, as_seconds = _time_columns(table, path, options)
    annotation = table.column(["annotation"])
    notated = table.column(["notated_path"])
    # Group rows by annotation number (else by notated file), in order of appearance.
    groups: dict[str, list[tuple[int, list[str]]]] = {}
    names: dict[str, str | None] = {}
    for line, fields in table.rows:
        key = field_of(table, fields, annotation, path, line).strip() if annotation else ""
        stem = _notated_stem(field_of(table, fields, notated, path, line)) if notated else None
        if not annotation:
            key = stem or ""
        groups.setdefault(key, []).append((line, fields))
        names.setdefault(key, stem)
    stems = [s for s in names.values() if s]
    csv_stem = recording_name(path, SUFFIXES)
    for key, rows in groups.items():
        stem = names[key]
        unique = stem is not None and stems.count(stem) == 1
        recording = stem if unique else f"{csv_stem}-{key or 0}"
        syllables = timed_rows(table, path, onset, offset, label, scale, rows)
        if as_seconds and options.check_units:
            check_seconds_plausible(syllables, path, onset)
        group = bird_from_name(stem or path.name, options)
        builder.add_recording(path, recording, group, syllables, options, label_column=label)


@register_adapter(
    "crowsetta-generic-seq",
    options=GenericSeqOptions,
    description="crowsetta generic-seq CSV (label,onset_s,offset_s,notated_path,…,annotation)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
    aliases=("generic-seq",),
)
def read(inputs: list[Path], options: GenericSeqOptions) -> Ingested:
    """Read generic-seq CSV files (or folders of `.csv` files); one recording per annotation."""
    return read_files(
        "crowsetta-generic-seq", inputs, options, SUFFIXES, "generic-seq", read_generic_seq_file
    )
