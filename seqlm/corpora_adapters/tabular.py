"""The generic tabular adapter: any CSV/TSV/Parquet files plus a column mapping.

This is the "ingest a new domain" path: no code, only a mapping (`TabularOptions`,
usually a TOML file) naming which columns hold the entity, time, code and so on.

Everything is lazy: the files are scanned (`tabular_files`), every mapped cell is parsed
by non-strict casts here, and each row is either an event or a reject with its reason.
`EventTable.frame` is a lazy plan that nothing here collects. CSV cells are read as
strings, so a bad cell becomes a reject instead of a schema error.

Row numbers in the reject log are 1-based. For CSV/TSV they are line numbers as a text
editor shows them, counting the header as line 1 (data row n is line n + 1); this is
exact unless a quoted cell holds a line break. For Parquet they are data rows.
`rows_read` counts data rows (CSV lines after the header, Parquet rows), and
`rows_read == events + rejects` holds because every row is either kept or rejected.
Without an `order` column, `order` is the row's position in the whole input (files in
the order given, folders sorted by path), so ties in time keep the input's order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from seqlm.corpora_adapters.base import Ingested, RejectLog, register_adapter
from seqlm.corpora_adapters.tabular_files import (
    FILE,
    READ_ERRORS,
    ROW,
    ScanGroup,
    count_rows,
    discover_files,
    first_line,
    read_schemas,
    scan_files,
    scan_groups,
)
from seqlm.corpora_adapters.tabular_mapping import (
    ISO_DATETIME_FORMATS,
    SECONDS_PER_UNIT,
    TabularOptions,
)
from seqlm.corpora_adapters.tabular_parse import (
    MAX_REJECTS_BY_NUMBER,
    REASON_CODE,
    FileRange,
    check_group,
    counted,
    disjoint_files,
    file_groups,
    rejects_in_files,
)
from seqlm.corpora_adapters.time_range import (
    TIME_RANGE_REASON,
    datetime_outside,
    seconds_outside,
)
from seqlm.errors import InputError
from seqlm.events import SPLITS, EventTable
from seqlm.progress import Progress, ensure_progress


def _cleaned(name: str, dtype: pl.DataType, options: TabularOptions) -> pl.Expr:
    """The raw column, with the mapping's null markers read as missing."""
    column = pl.col(name)
    if dtype == pl.String and options.null_values:
        column = pl.when(column.is_in(options.null_values)).then(None).otherwise(column)
    return column


def _as_text(name: str, dtype: pl.DataType, options: TabularOptions, file: Path) -> pl.Expr:
    if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
        raise InputError(
            f"column holds {dtype} values, not text or numbers", file=file, column=name
        )
    return _cleaned(name, dtype, options).cast(pl.String)


def _blank(text: pl.Expr) -> pl.Expr:
    # Null or empty. Whitespace-only cells are kept as they are: stripping every string
    # of a large table to look for them costs more than the whole rest of the parse.
    return text.is_null() | (text.str.len_bytes() == 0)


def _as_number(name: str, dtype: pl.DataType, options: TabularOptions, file: Path) -> pl.Expr:
    """Float64 from a numeric or string column; unparseable strings become null."""
    raw = _cleaned(name, dtype, options)
    if dtype == pl.String:
        return raw.str.strip_chars().cast(pl.Float64, strict=False)
    if dtype.is_numeric() or dtype in (pl.Boolean, pl.Null):
        return raw.cast(pl.Float64)
    raise InputError(f"column holds {dtype} values, not numbers", file=file, column=name)


def _as_seconds(name: str, dtype: pl.DataType, options: TabularOptions, file: Path) -> pl.Expr:
    if isinstance(dtype, pl.Duration):
        return pl.col(name).dt.total_microseconds().cast(pl.Float64) / 1e6
    if isinstance(dtype, pl.Datetime | pl.Date):
        raise InputError(
            f'column holds {dtype} values; set time_unit = "datetime" to read them',
            file=file,
            column=name,
        )
    return _as_number(name, dtype, options, file) * SECONDS_PER_UNIT[options.time_unit]


def _as_datetime(
    name: str, dtype: pl.DataType, options: TabularOptions, file: Path
) -> tuple[pl.Expr, str]:
    """A naive Datetime("us") expression (time zones converted to UTC), and the reason
    given when a cell cannot be parsed."""
    if isinstance(dtype, pl.Datetime):
        parsed = pl.col(name)
        if dtype.time_zone is not None:
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return parsed.cast(pl.Datetime("us")), "time is not a datetime"
    if isinstance(dtype, pl.Date):
        return pl.col(name).cast(pl.Datetime("us")), "time is not a datetime"
    if dtype != pl.String:
        raise InputError(
            f"column holds {dtype} values, not datetimes; give their unit as time_unit "
            f"({', '.join(SECONDS_PER_UNIT)})",
            file=file,
            column=name,
        )
    raw = _cleaned(name, dtype, options).str.strip_chars()
    formats = (options.time_format,) if options.time_format else ISO_DATETIME_FORMATS
    attempts = [raw.str.to_datetime(f, strict=False, time_unit="us") for f in formats]
    parsed = attempts[0] if len(attempts) == 1 else pl.coalesce(attempts)
    # A format with %z gives a zone-aware result; keep every file's times naive UTC so
    # that files stack and times compare.
    zoned = pl.LazyFrame(schema={name: pl.String}).select(parsed).collect_schema().dtypes()[0]
    if isinstance(zoned, pl.Datetime) and zoned.time_zone is not None:
        parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    expected = options.time_format or "an ISO 8601 date or datetime"
    return parsed, f"time does not match {expected}"


def _as_order(name: str, dtype: pl.DataType, options: TabularOptions, file: Path) -> pl.Expr:
    raw = _cleaned(name, dtype, options)
    if dtype == pl.String:
        return raw.str.strip_chars().cast(pl.Int64, strict=False)
    if dtype.is_integer() or dtype == pl.Null:
        return raw.cast(pl.Int64, strict=False)
    if dtype.is_float():
        whole = raw.is_finite() & (raw == raw.floor())
        return pl.when(whole).then(raw.cast(pl.Int64, strict=False))
    raise InputError(f"column holds {dtype} values, not integers", file=file, column=name)


Check = tuple[pl.Expr, str, str]  # (row is bad, column, reason)


def _time_column(schema: pl.Schema, file: Path, o: TabularOptions, checks: list[Check]) -> pl.Expr:
    """The event time (datetime or seconds, per `time_unit`), appending its checks."""
    if o.time is None:
        return pl.lit(None, dtype=pl.Float64)
    raw_time = _cleaned(o.time, schema[o.time], o)
    time_missing = raw_time.is_null()
    if schema[o.time] == pl.String:
        time_missing = _blank(raw_time)
    if o.missing_time == "reject":
        checks.append((time_missing, o.time, "time is missing"))
    if o.time_unit == "datetime":
        time, unparsed_reason = _as_datetime(o.time, schema[o.time], o, file)
        checks.append((~time_missing & time.is_null(), o.time, unparsed_reason))
        outside = datetime_outside(time, o.earliest_time, o.latest_time)
        checks.append((outside, o.time, TIME_RANGE_REASON))
        return time
    time = _as_seconds(o.time, schema[o.time], o, file)
    checks.append((~time_missing & time.is_null(), o.time, "time is not a number"))
    checks.append((~time.is_finite(), o.time, "time is not a finite number"))
    checks.append((seconds_outside(time, o.max_abs_seconds), o.time, TIME_RANGE_REASON))
    return time


def _value_column(schema: pl.Schema, file: Path, o: TabularOptions, checks: list[Check]) -> pl.Expr:
    """The numeric value (NaN read as no value), appending its checks."""
    if o.value is None:
        return pl.lit(None, dtype=pl.Float64)
    value = _as_number(o.value, schema[o.value], o, file)
    raw_value = _cleaned(o.value, schema[o.value], o)
    checks.append((raw_value.is_not_null() & value.is_null(), o.value, "value is not a number"))
    checks.append((value.is_infinite(), o.value, "value is infinite"))
    # NaN is how many tools write "no value": the event is kept without one.
    return pl.when(value.is_nan()).then(None).otherwise(value)


def _code_column(schema: pl.Schema, file: Path, o: TabularOptions) -> pl.Expr:
    """The code: one column as text, or several joined with `//` (blank parts left out)."""
    parts = [_as_text(c, schema[c], o, file) for c in o.code_columns]
    if len(parts) == 1:
        return parts[0]
    parts = [pl.when(_blank(p)).then(None).otherwise(p) for p in parts]
    return pl.concat_str(parts, separator="//", ignore_nulls=True)


def parse_rows(
    frame: pl.LazyFrame,
    group: ScanGroup,
    options: TabularOptions,
    attributes_as_text: bool,
    checked: bool = True,
) -> tuple[pl.LazyFrame, list[tuple[str, str]]]:
    """A scan group's rows as canonical event columns plus, per row, `REASON_CODE`: the
    number of its first failed check (null when the row is kept); and the (column,
    reason) of each check by number. The scan's ROW (and FILE) columns pass through.
    `checked=False`: the event columns only, without the checks (for rows known to pass
    them: a kept row's columns are the same either way)."""
    o = options
    # The group's files share one schema; errors about column types name its first file.
    schema, file = group.sources[0].schema, group.sources[0].path
    checks: list[Check] = []  # in order: the first failed one names the row's reason

    entity = _as_text(o.entity, schema[o.entity], o, file)
    checks.append((_blank(entity), o.entity, "entity is missing"))
    code = _code_column(schema, file, o)
    checks.append((_blank(code), ",".join(o.code_columns), "code is missing"))
    time = _time_column(schema, file, o, checks)
    value = _value_column(schema, file, o, checks)

    if o.order is None:
        # Input order across all files: a stable tie-break without a window over entities.
        order = pl.col(ROW).cast(pl.Int64) + group.first_order
    else:
        order = _as_order(o.order, schema[o.order], o, file)
        checks.append((order.is_null(), o.order, "order is not an integer"))

    split = pl.lit(None, dtype=pl.String)
    if o.split is not None:
        split = _as_text(o.split, schema[o.split], o, file)
        bad_split = split.is_not_null() & ~split.is_in(list(SPLITS))
        checks.append((bad_split, o.split, "split is not train, tuning or held_out"))

    def optional_text(name: str | None) -> pl.Expr:
        if name is None:
            return pl.lit(None, dtype=pl.String)
        return _as_text(name, schema[name], o, file)

    kind = pl.lit(o.kind_value, dtype=pl.String)
    if o.kind is not None:
        kind_text = optional_text(o.kind)
        kind = pl.when(_blank(kind_text)).then(kind).otherwise(kind_text)

    attributes = [
        pl.col(a).cast(pl.String) if attributes_as_text else pl.col(a) for a in o.attributes
    ]
    columns = [
        entity.alias("entity"),
        optional_text(o.group).alias("group"),
        time.alias("time"),
        order.alias("order"),
        kind.alias("kind"),
        code.alias("code"),
        value.alias("value"),
        optional_text(o.text).alias("text"),
        split.alias("split"),
        *attributes,
        *[pl.col(c) for c in (ROW, FILE) if c in frame.collect_schema().names()],
    ]
    if not checked:
        return frame.select(columns), []
    return _with_reject_code(frame, columns, checks), [(c, why) for _, c, why in checks]


def _with_reject_code(
    frame: pl.LazyFrame, columns: list[pl.Expr], checks: list[Check]
) -> pl.LazyFrame:
    """`columns` of `frame` plus the number of each row's first failed check."""
    # Each check is evaluated once, into a flag column; the number of the first failed
    # one is picked from the flags (a small integer: the reason's text is looked up for
    # the rejected rows alone, after they are filtered out).
    flags = [f"__seqlm_bad_{i}" for i in range(len(checks))]
    with_flags = frame.select(
        *columns,
        # fill_null: a check on a missing cell counts as passed; missing cells have
        # their own checks.
        *[
            bad.fill_null(False).alias(flag)
            for (bad, _, _), flag in zip(checks, flags, strict=True)
        ],
    )
    code = pl.when(pl.col(flags[0])).then(pl.lit(0, dtype=pl.UInt8))
    for number, flag in enumerate(flags[1:], start=1):
        code = code.when(pl.col(flag)).then(pl.lit(number, dtype=pl.UInt8))
    code = code.otherwise(pl.lit(None, dtype=pl.UInt8))
    return with_flags.with_columns(code.alias(REASON_CODE)).drop(flags)


@register_adapter(
    "tabular",
    options=TabularOptions,
    description="Any CSV/TSV/Parquet files or folders, with a column mapping (TOML).",
)
def read_tabular(
    inputs: list[Path], options: TabularOptions, progress: Progress | None = None
) -> Ingested:
    """Read files and folders of tabular events with the mapping `options`."""
    progress = ensure_progress(progress)
    sources = read_schemas(discover_files([Path(p) for p in inputs]), options)
    progress.start("counting rows", total=sum(s.fmt == "parquet" for s in sources))
    sources = count_rows(sources, options, progress)
    progress.finish()
    attributes_as_text = any(s.fmt != "parquet" for s in sources)

    # One checking pass per scan group: row counts, rejects, each file's entity range.
    progress.start("checking rows", total=len(sources))
    passes = []
    for group in scan_groups(sources, options):
        paths = [s.path for s in group.sources]
        scan = scan_files(paths, group.sources[0].fmt, options, file_column=len(paths) > 1)
        passes.append(
            check_group(parse_rows(scan, group, options, attributes_as_text), group, options)
        )
        progress.advance(len(paths))
    progress.finish()
    files = {name: found for done in passes for name, found in done.files.items()}
    sources = counted(sources, files)
    groups = scan_groups(sources, options)  # the same groups, now with their rows

    rejects = RejectLog()
    for group, done in zip(groups, passes, strict=True):
        rejects.extend(rejects_in_files(done.rejects, group))
    rejected = [done.rejects[ROW] for done in passes]
    stacked = _stacked(
        [
            _group_events(g, r, options, attributes_as_text)
            for g, r in zip(groups, rejected, strict=True)
        ]
    )
    events = EventTable.from_frame(stacked, attributes=options.attributes)
    rows_read = sum(s.rows for s in sources)
    source_parts: tuple[tuple[int, pl.LazyFrame], ...] = ()
    if disjoint_files([files.get(str(s.path), FileRange(s.rows)) for s in sources], rows_read):
        schema = stacked.collect_schema()
        source_parts = tuple(
            (
                single.rows,
                _as_events(_group_events(single, r, options, attributes_as_text), schema, options),
            )
            for group, group_rejected in zip(groups, rejected, strict=True)
            for single, r in file_groups(group, group_rejected)
        )
    settings = {
        "mapping": dataclasses.asdict(options),
        "inputs": [str(p) for p in inputs],
        "files": len(sources),
        "formats": sorted({s.fmt for s in sources}),
    }
    return Ingested(
        events=events,
        rejects=rejects,
        rows_read=rows_read,
        adapter="tabular",
        settings=settings,
        time_unit="index" if options.time_unit == "index" else "s",
        source_parts=source_parts,
    )


def _group_events(
    group: ScanGroup, rejected: pl.Series, options: TabularOptions, attributes_as_text: bool
) -> pl.LazyFrame:
    """The kept rows of a scan group, parsed (a plan: the corpus build reads it).

    `rejected`: the group's rows (0-based) that the checking pass rejected. They are left
    out by their numbers, so that the checks are not evaluated again; past
    `MAX_REJECTS_BY_NUMBER` of them, by the checks.
    """
    paths = [s.path for s in group.sources]
    scan = scan_files(paths, group.sources[0].fmt, options)
    if rejected.len() > MAX_REJECTS_BY_NUMBER:
        parsed, _ = parse_rows(scan, group, options, attributes_as_text)
        return parsed.filter(pl.col(REASON_CODE).is_null()).drop(ROW, REASON_CODE)
    parsed, _ = parse_rows(scan, group, options, attributes_as_text, checked=False)
    if rejected.len():
        parsed = parsed.filter(~pl.col(ROW).is_in(rejected.implode()))
    return parsed.drop(ROW)


def _stacked(parts: list[pl.LazyFrame]) -> pl.LazyFrame:
    try:
        stacked = pl.concat(parts, how="vertical_relaxed")
        stacked.collect_schema()
    except READ_ERRORS as err:
        raise InputError(
            f"the input files cannot be stacked (do the attribute columns hold the same "
            f"kind of values in every file?): {first_line(err)}"
        ) from None
    return stacked


def _as_events(part: pl.LazyFrame, schema: pl.Schema, options: TabularOptions) -> pl.LazyFrame:
    """One file's events with the stacked events' column types (as the hash path has)."""
    typed = part.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
    unsorted = EventTable.from_frame(typed, attributes=options.attributes).unsorted
    assert unsorted is not None
    return unsorted
