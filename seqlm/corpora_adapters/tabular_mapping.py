"""The column mapping of the generic tabular adapter, and how input files are found.

A mapping says which columns of a user's CSV/TSV/Parquet files hold the entity (one
sequence's owner), its group, the event time and its unit, a tie-break order, and the
fields that make a token (kind, code, value, text). It is an options dataclass, so it is
filled from a TOML file (`--config mapping.toml`) and `--option key=value` strings by
`options_from_mapping`, like every adapter's options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seqlm.corpora_adapters.time_range import (
    DEFAULT_EARLIEST,
    DEFAULT_LATEST,
    DEFAULT_MAX_ABS_SECONDS,
    EARLIEST_HELP,
    LATEST_HELP,
    MAX_SECONDS_HELP,
    check_bounds,
)
from seqlm.errors import ConfigError, InputError
from seqlm.events import EVENT_COLUMNS

TimeUnit = Literal["s", "ms", "us", "min", "h", "d", "index", "datetime"]

# Seconds per unit for numeric time columns; "datetime" columns stay polars Datetime.
SECONDS_PER_UNIT: dict[str, float] = {
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    # Unitless positions (beats, steps, token positions): kept as the numbers given, and
    # the corpus records that its times are not seconds.
    "index": 1.0,
}

# Formats tried, in order, for string datetimes when the mapping names no `time_format`.
# A fixed list rather than polars' per-batch format inference, so that every batch of a
# large file is parsed the same way.
ISO_DATETIME_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)

# File suffixes read from a folder, and the format each implies.
TABULAR_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class TabularOptions:
    """Which columns of the input files make the canonical event columns.

    Every name is a column of the input files. `code` may list several columns, joined
    with `//` into one code (null parts are left out). `time` is a number in `time_unit`
    (converted to seconds) or, with `time_unit = "datetime"`, a datetime column or a
    string parsed with `time_format` (strftime; default: ISO 8601 forms). Without
    `order`, events at the same time keep their order in the input.
    """

    entity: str = field(
        metadata={
            "help": "Column whose value names the sequence an event belongs to (a patient, a recording, a piece)."
        }
    )
    code: str | list[str] = field(
        metadata={
            "help": "Column (or list of columns, joined with //) that makes the event's code."
        }
    )
    group: str | None = field(
        default=None,
        metadata={"help": "Column of a coarser unit (bird, site) for counts and group splits."},
    )
    time: str | None = field(
        default=None,
        metadata={
            "help": "Column of event times: a number in time_unit, or a datetime with time_unit = datetime."
        },
    )
    time_unit: TimeUnit = field(
        default="s",
        metadata={
            "help": "Unit of the time column: s, ms, us, min, h, d, datetime, or index (unitless: beats, steps, positions)."
        },
    )
    time_format: str | None = field(
        default=None,
        metadata={
            "help": "strftime format of string datetimes (time_unit = datetime); default: ISO 8601 forms."
        },
    )
    # A row whose time cell is empty: "reject" it, or keep it as a "static" (untimed)
    # event, which sorts before the entity's timed events (as MEDS static rows do).
    missing_time: Literal["reject", "static"] = field(
        default="reject",
        metadata={
            "help": "A row with an empty time: reject it, or keep it as a static event sorted first."
        },
    )
    order: str | None = field(
        default=None,
        metadata={
            "help": "Numeric column that orders events at the same time; default: their order in the input."
        },
    )
    kind: str | None = field(
        default=None, metadata={"help": "Column of the event's kind (the first part of its token)."}
    )
    kind_value: str = field(
        default="event", metadata={"help": "The kind of every event when no kind column is given."}
    )
    value: str | None = field(
        default=None,
        metadata={
            "help": "Numeric column of event values (binned into tokens per scheme.value_mode)."
        },
    )
    text: str | None = field(
        default=None,
        metadata={"help": "Text column (joins the token with scheme.use_text = true)."},
    )
    split: str | None = field(
        default=None,
        metadata={"help": "Column naming each entity's split (train, tuning, held_out)."},
    )
    attributes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Further columns kept per sequence in the corpus index (usable by seqlm subset --where)."
        },
    )
    # CSV field separator; None means "," except for .tsv/.tab files (tab).
    separator: str | None = field(
        default=None,
        metadata={"help": "CSV field separator; null = ',' except for .tsv/.tab files (tab)."},
    )
    # Cell contents read as missing, in every mapped string column (e.g. "NA", ".").
    null_values: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Cell contents read as missing in every mapped string column (e.g. NA, '.')."
        },
    )
    earliest_time: str = field(default=DEFAULT_EARLIEST, metadata={"help": EARLIEST_HELP})
    latest_time: str = field(default=DEFAULT_LATEST, metadata={"help": LATEST_HELP})
    max_abs_seconds: float = field(
        default=DEFAULT_MAX_ABS_SECONDS, metadata={"help": MAX_SECONDS_HELP}
    )

    def __post_init__(self) -> None:
        if isinstance(self.code, list) and not self.code:
            raise ConfigError("option 'code' names no column")
        if not self.entity:
            raise ConfigError("option 'entity' must name a column")
        if self.time_format is not None and self.time_unit != "datetime":
            raise ConfigError("option 'time_format' needs time_unit = \"datetime\"")
        if self.separator is not None and len(self.separator.encode()) != 1:
            raise ConfigError(
                f"option 'separator' must be a single one-byte character, got {self.separator!r}"
            )
        check_bounds(self.earliest_time, self.latest_time)
        if not self.max_abs_seconds > 0:
            raise ConfigError("option 'max_abs_seconds' must be positive")
        if not self.kind_value:
            raise ConfigError("option 'kind_value' must not be empty")
        clashes = sorted(set(self.attributes) & set(EVENT_COLUMNS))
        if clashes:
            raise ConfigError(
                f"attribute(s) {', '.join(clashes)} would clash with the event columns "
                f"{', '.join(EVENT_COLUMNS)}; rename them in the input"
            )
        if len(set(self.attributes)) != len(self.attributes):
            raise ConfigError("option 'attributes' lists a column twice")

    @property
    def code_columns(self) -> list[str]:
        return [self.code] if isinstance(self.code, str) else list(self.code)

    def columns_by_role(self) -> dict[str, list[str]]:
        """The input columns the mapping names, by the role they play."""
        single = {
            "entity": self.entity,
            "group": self.group,
            "time": self.time,
            "order": self.order,
            "kind": self.kind,
            "value": self.value,
            "text": self.text,
            "split": self.split,
        }
        roles = {role: [name] for role, name in single.items() if name is not None}
        roles["code"] = self.code_columns
        if self.attributes:
            roles["attributes"] = list(self.attributes)
        return roles

    def input_columns(self) -> list[str]:
        """Every input column the mapping reads, each once, in a stable order."""
        seen: dict[str, None] = {}
        for names in self.columns_by_role().values():
            seen.update(dict.fromkeys(names))
        return list(seen)


def check_columns_present(options: TabularOptions, present: list[str], file: Path) -> None:
    """Raise an InputError naming the file, the missing column and the columns present."""
    present_set = set(present)
    for role, names in options.columns_by_role().items():
        for name in names:
            if name not in present_set:
                listed = ", ".join(repr(c) for c in present) if present else "(none)"
                raise InputError(
                    f"the mapping's {role} column is not in this file; columns present: {listed}",
                    file=file,
                    column=name,
                )
