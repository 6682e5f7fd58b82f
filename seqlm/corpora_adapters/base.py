"""The reject log, what an adapter returns, and the adapter registry.

Adapters are the only code that reads raw source files. Each turns its files into an
`EventTable` (one row per event, canonical columns; defined in `seqlm.events`) and a
`RejectLog` (every input row it did not use, with the reason), so that rows read = rows
used + rows rejected. Adapter options are settings dataclasses read by `seqlm.config`.

The event schema and the option readers used to live here; their names are re-exported
below for one release so that existing imports keep working. New code imports them from
`seqlm.events` and `seqlm.config`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

# Re-exported for one release (see the module docstring).
from seqlm.config import load_toml, options_from_mapping, parse_option_strings
from seqlm.events import (
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    SORT_KEY,
    SPLITS,
    EventTable,
    time_in_seconds,
)

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_SCHEMA",
    "REJECT_SCHEMA",
    "SORT_KEY",
    "SPLITS",
    "AdapterSpec",
    "EventTable",
    "Ingested",
    "RejectLog",
    "load_toml",
    "options_from_mapping",
    "parse_option_strings",
    "register_adapter",
    "registered_adapters",
    "reject_columns",
    "time_in_seconds",
]

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "row": pl.Int64(),
    "column": pl.String(),
    "reason": pl.String(),
}


def reject_columns(frame: pl.LazyFrame) -> pl.LazyFrame:
    """`frame`'s reject columns (`REJECT_SCHEMA`, absent ones null) as `RejectLog` keeps them."""
    names = frame.collect_schema().names()
    return frame.select(
        [
            (pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c)
            for c, t in REJECT_SCHEMA.items()
        ]
    )


class RejectLog:
    """Every input row that was read but not used, with where it was and why.

    Small formats add rows one at a time; lazy readers add whole frames of rejects
    (columns `file, row, column, reason`).
    """

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._frames: list[pl.LazyFrame] = []

    def add(
        self, file: str | Path, row: int | None, reason: str, column: str | None = None
    ) -> None:
        self._rows.append({"file": str(file), "row": row, "column": column, "reason": reason})

    def extend(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frames.append(reject_columns(frame.lazy()))

    def merge(self, other: RejectLog) -> None:
        self._rows.extend(other._rows)
        self._frames.extend(other._frames)

    def to_frame(self) -> pl.DataFrame:
        parts = [pl.DataFrame(self._rows, schema=REJECT_SCHEMA)] if self._rows else []
        parts.extend(f.collect() for f in self._frames)
        if not parts:
            return pl.DataFrame(schema=REJECT_SCHEMA)
        return pl.concat(parts, how="vertical")

    def counts_by_reason(self) -> dict[str, int]:
        frame = self.to_frame()
        if frame.height == 0:
            return {}
        counts = frame.group_by("reason").len().sort("len", descending=True)
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))

    def __len__(self) -> int:
        return len(self._rows) + sum(f.select(pl.len()).collect().item() for f in self._frames)


@dataclass
class Ingested:
    """What an adapter returns.

    `rows_read` counts input rows (lines, intervals, symbols: the unit the adapter
    documents) so that `rows_read == events used + len(rejects)` can be checked.
    `settings` goes into the corpus manifest: adapter options and input file names,
    never subject identifiers.
    """

    events: EventTable
    rejects: RejectLog
    rows_read: int
    adapter: str
    settings: dict[str, Any] = field(default_factory=dict)
    # What `time` counts: "s" (seconds, or datetimes) or "index" (unitless positions).
    time_unit: str = "s"
    # Lines for the user after ingest (label counts, a likely intro note, a missing bird
    # name); kept in the manifest. Never identifiers.
    notes: list[str] = field(default_factory=list)
    # The events again, split the way the source is stored (MEDS: per shard), as
    # (input rows, unsorted events) pairs that should each hold whole entities: the
    # corpus builder uses them as its partitions instead of hashing the events into
    # spill files, and falls back to hashing when an entity turns up in two of them
    # (seqlm.corpus.source_parts). Empty: the builder hashes.
    source_parts: tuple[tuple[int, pl.LazyFrame], ...] = ()
    # Optional, one per source part: a picklable function that reads the part once and
    # gives its events (as in `source_parts`) and its rejects (`reject_columns`); the
    # parts' rejects one after another are all of `rejects`, in order. The builder then
    # takes the rejects from its sort stage instead of reading the source again.
    source_reads: tuple[Callable[[], tuple[pl.DataFrame, pl.DataFrame]], ...] = ()


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    description: str
    options: type
    read: Callable[..., Ingested]
    # Overrides of TokenScheme defaults suited to the source (e.g. clinical privacy
    # threshold 5, time-gap bins); a user's config overrides these in turn.
    scheme_defaults: dict[str, Any] = field(default_factory=dict)
    # Defaults of the [splits] table suited to the source (Koumura: split by recording).
    split_defaults: dict[str, Any] = field(default_factory=dict)
    # Other names accepted for the adapter (crowsetta's format names).
    aliases: tuple[str, ...] = ()
    # `count_rows(inputs, options)`: the input rows, cheaply (file metadata), before
    # `read`; the ingest starts the corpus build's worker processes from it while
    # `read` runs. None: they start when the build needs them.
    count_rows: Callable[[Sequence[Path], Any], int] | None = None


_REGISTRY: dict[str, AdapterSpec] = {}


def register_adapter(
    name: str,
    options: type,
    description: str,
    scheme_defaults: Mapping[str, Any] | None = None,
    split_defaults: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
    count_rows: Callable[[Sequence[Path], Any], int] | None = None,
) -> Callable[[Callable[..., Ingested]], Callable[..., Ingested]]:
    """Register `read(inputs: list[Path], options) -> Ingested` under `name`."""

    def decorate(read: Callable[..., Ingested]) -> Callable[..., Ingested]:
        if name in _REGISTRY and _REGISTRY[name].read is not read:
            raise ValueError(f"adapter {name!r} registered twice")
        _REGISTRY[name] = AdapterSpec(
            name=name,
            description=description,
            options=options,
            read=read,
            scheme_defaults=dict(scheme_defaults or {}),
            split_defaults=dict(split_defaults or {}),
            aliases=tuple(aliases),
            count_rows=count_rows,
        )
        return read

    return decorate


def registered_adapters() -> dict[str, AdapterSpec]:
    return dict(sorted(_REGISTRY.items()))
