"""The EventTable contract, the reject log, and the adapter registry.

Adapters are the only code that reads raw source files. Each turns its files into an
`EventTable` (one row per event, canonical columns) and a `RejectLog` (every input row
it did not use, with the reason), so that rows read = rows used + rows rejected.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.errors import ConfigError, InputError, did_you_mean

# The canonical event columns. `time` is Float64 seconds from the entity's start, or a
# Datetime (MEDS); everything downstream converts it with `time_in_seconds`.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "entity": pl.String(),
    "group": pl.String(),
    "time": pl.Float64(),
    "order": pl.Int64(),
    "kind": pl.String(),
    "code": pl.String(),
    "value": pl.Float64(),
    "text": pl.String(),
    "split": pl.String(),
}
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA)
SPLITS: tuple[str, ...] = ("train", "tuning", "held_out")
SORT_KEY: tuple[str, ...] = ("entity", "time", "order")

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "row": pl.Int64(),
    "column": pl.String(),
    "reason": pl.String(),
}


@dataclass
class EventTable:
    """One row per event, sorted by (entity, time, order) once collected.

    `frame` is lazy so that sources larger than memory stream through. `attributes`
    names extra entity-level columns (constant within an entity, e.g. a bird's lesion
    `condition`) that the corpus copies into its index.
    """

    frame: pl.LazyFrame
    attributes: tuple[str, ...] = ()
    # The same events before the sort, for readers that partition them first (the
    # corpus builder): sorting them all at once would hold them all in memory.
    unsorted: pl.LazyFrame | None = None

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame | pl.LazyFrame, attributes: Sequence[str] = ()
    ) -> EventTable:
        """Fill absent optional columns with nulls, cast to the schema, and sort."""
        lazy = frame.lazy()
        names = lazy.collect_schema().names()
        for required in ("entity", "code"):
            if required not in names:
                raise InputError(f"event table has no {required!r} column", column=required)
        time_type = lazy.collect_schema().get("time")
        exprs = []
        for name, dtype in EVENT_SCHEMA.items():
            if name == "time" and isinstance(time_type, pl.Datetime):
                exprs.append(pl.col("time"))
            elif name in names:
                exprs.append(pl.col(name).cast(dtype))
            elif name == "order":
                exprs.append(pl.int_range(pl.len(), dtype=pl.Int64).over("entity").alias(name))
            elif name == "kind":
                exprs.append(pl.lit("event", dtype=pl.String()).alias(name))
            else:
                exprs.append(pl.lit(None, dtype=dtype).alias(name))
        exprs.extend(pl.col(a) for a in attributes)
        lazy = lazy.select(exprs)
        return cls(
            frame=lazy.sort(list(SORT_KEY), nulls_last=False, maintain_order=True),
            attributes=tuple(attributes),
            unsorted=lazy,
        )

    def collect(self) -> pl.DataFrame:
        return self.frame.collect()

    @property
    def columns(self) -> list[str]:
        return list(EVENT_COLUMNS) + list(self.attributes)


def time_in_seconds(time: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Seconds since the entity's first timed event, as Float64, for either time type."""
    if isinstance(dtype, pl.Datetime):
        seconds = time.dt.epoch("us").cast(pl.Float64) / 1e6
    else:
        seconds = time.cast(pl.Float64)
    return seconds - seconds.min().over("entity")


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
        lazy = frame.lazy()
        names = lazy.collect_schema().names()
        lazy = lazy.select(
            [
                (pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c)
                for c, t in REJECT_SCHEMA.items()
            ]
        )
        self._frames.append(lazy)

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


_REGISTRY: dict[str, AdapterSpec] = {}


def register_adapter(
    name: str,
    options: type,
    description: str,
    scheme_defaults: Mapping[str, Any] | None = None,
    split_defaults: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
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
        )
        return read

    return decorate


def registered_adapters() -> dict[str, AdapterSpec]:
    return dict(sorted(_REGISTRY.items()))


# ---------------------------------------------------------------------------------------
# Options: dataclasses filled from TOML tables and `--option key=value` strings.


def parse_option_strings(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are read as TOML literals, else as plain strings.

    `a.b=1` nests into {"a": {"b": 1}}. No code is evaluated.
    """
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"option {pair!r} is not of the form key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"option {pair!r} has an empty key")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        target = result
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"option {key!r} conflicts with an earlier option")
        target[parts[-1]] = value
    return result


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin in (list, tuple, set, frozenset):
        items = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, str):
            items = [v for v in value.split(",") if v]
        inner = args[0] if args else Any
        coerced = [_coerce(v, inner, name) for v in items]
        return origin(coerced) if origin is not list else coerced
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"option {name!r} must be a table, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"option {name!r} must be one of {list(args)}, got {value!r}")
        return value
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"option {name!r} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"option {name!r} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"option {name!r} must be an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"option {name!r} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"option {name!r} must be a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"option {name!r} must be a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(str(value))
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"option {name!r} must be a table, got {value!r}")
        return options_from_mapping(annotation, value, prefix=f"{name}.")
    return value


def options_from_mapping(cls: type, mapping: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the options dataclass `cls` from a mapping, checking names and types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(prefix + u for u in unknown)}"
            f"{did_you_mean(unknown, known, prefix)}; "
            f"known: {', '.join(sorted(prefix + k for k in known))}"
        )
    required = [
        prefix + f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in mapping
    ]
    if required:
        raise ConfigError(f"missing required option(s): {', '.join(required)}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in mapping.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid options: {err}") from err


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
