"""The generic tabular adapter: any CSV/TSV/Parquet files plus a column mapping.

This is the "ingest a new domain" path: no code, only a mapping (`TabularOptions`,
usually a TOML file) naming which columns hold the entity, time, code and so on.

Everything is lazy. Each file is scanned on its own (`pl.scan_csv` / `pl.scan_parquet`)
so that reject rows can name their file and row; the per-file plans are stacked into
one `EventTable.frame` that nothing here collects. CSV cells are read as strings and
parsed by explicit casts, so a bad cell becomes a reject instead of a schema error.

Row numbers in the reject log are 1-based. For CSV/TSV they are line numbers as a text
editor shows them, counting the header as line 1 (data row n is line n + 1); this is
exact unless a quoted cell holds a line break. For Parquet they are data rows.
`rows_read` counts data rows (CSV lines after the header, Parquet rows), and
`rows_read == events + rejects` holds because every row is either kept or rejected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from polars.exceptions import PanicException, PolarsError

from seqlm.corpora_adapters.base import (
    SPLITS,
    EventTable,
    Ingested,
    RejectLog,
    register_adapter,
)
from seqlm.corpora_adapters.tabular_mapping import (
    ISO_DATETIME_FORMATS,
    SECONDS_PER_UNIT,
    TabularOptions,
    check_columns_present,
    discover_files,
)
from seqlm.errors import InputError
from seqlm.progress import Progress, ensure_progress

# Internal column names; the double underscore keeps them clear of users' columns.
ROW = "__seqlm_row"
REASON = "__seqlm_reject_reason"
REJECT_COLUMN = "__seqlm_reject_column"

# Errors polars raises on malformed files (ragged CSV lines, bad UTF-8, corrupt Parquet);
# a panic is polars' last resort on input it cannot handle. All become InputErrors.
READ_ERRORS = (PolarsError, PanicException, OSError)

# How many files one `collect_all` checks at a time (files are checked concurrently).
FILES_PER_CHECK = 16


@dataclass(frozen=True)
class TabularSource:
    """One input file, how to read it, and where its rows sit in the whole input."""

    path: Path
    fmt: str  # "csv", "tsv" or "parquet"
    # Added to the 1-based data row to give the row a person sees (1 for a CSV header).
    line_offset: int


def scan_source(source: TabularSource, options: TabularOptions) -> pl.LazyFrame:
    """The file as a lazy frame of its raw cells, with a 1-based data-row index."""
    if source.fmt == "parquet":
        scan = pl.scan_parquet(source.path)
    else:
        separator = options.separator or ("\t" if source.fmt == "tsv" else ",")
        # Every cell as a string: parsing is done by explicit casts so that a bad cell
        # is a reject of that row, not an error for the whole file.
        scan = pl.scan_csv(
            source.path,
            separator=separator,
            infer_schema=False,
            raise_if_empty=False,
            null_values=options.null_values or None,
        )
    return scan.with_row_index(ROW, offset=1)


def _guard_schema(frame: pl.LazyFrame, file: Path) -> pl.Schema:
    try:
        return frame.collect_schema()
    except READ_ERRORS as err:
        raise InputError(f"cannot read the file: {_first_line(err)}", file=file) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
    return text.is_null() | (text.str.strip_chars() == "")


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


def _first_failing(
    checks: list[tuple[pl.Expr, str, str]], pick: Callable[[tuple[pl.Expr, str, str]], str]
) -> pl.Expr:
    """The picked label of the first check a row fails, else null."""
    # fill_null: a check on a missing cell counts as passed; missing cells have their
    # own checks.
    bad, *_ = checks[0]
    chain = pl.when(bad.fill_null(False)).then(pl.lit(pick(checks[0])))
    for check in checks[1:]:
        chain = chain.when(check[0].fill_null(False)).then(pl.lit(pick(check)))
    return chain.otherwise(pl.lit(None, dtype=pl.String))


def parse_source(
    frame: pl.LazyFrame,
    schema: pl.Schema,
    source: TabularSource,
    options: TabularOptions,
    order_offset: int,
    attributes_as_text: bool,
) -> pl.LazyFrame:
    """Canonical event columns plus, per row, the reject reason and column (null when
    the row is kept), and its row number as a person counts it."""
    o, file = options, source.path
    checks: list[tuple[pl.Expr, str, str]] = []  # (row is bad, column, reason), in order

    entity = _as_text(o.entity, schema[o.entity], o, file)
    checks.append((_blank(entity), o.entity, "entity is missing"))

    parts = [_as_text(c, schema[c], o, file) for c in o.code_columns]
    parts = [pl.when(_blank(p)).then(None).otherwise(p) for p in parts]
    code = pl.concat_str(parts, separator="//", ignore_nulls=True)
    checks.append((_blank(code), ",".join(o.code_columns), "code is missing"))

    if o.time is None:
        time = pl.lit(None, dtype=pl.Float64)
    else:
        raw_time = _cleaned(o.time, schema[o.time], o)
        time_missing = raw_time.is_null()
        if schema[o.time] == pl.String:
            time_missing = _blank(raw_time)
        if o.missing_time == "reject":
            checks.append((time_missing, o.time, "time is missing"))
        if o.time_unit == "datetime":
            time, unparsed_reason = _as_datetime(o.time, schema[o.time], o, file)
            checks.append((~time_missing & time.is_null(), o.time, unparsed_reason))
        else:
            time = _as_seconds(o.time, schema[o.time], o, file)
            checks.append((~time_missing & time.is_null(), o.time, "time is not a number"))
            checks.append((~time.is_finite(), o.time, "time is not a finite number"))

    if o.value is None:
        value = pl.lit(None, dtype=pl.Float64)
    else:
        value = _as_number(o.value, schema[o.value], o, file)
        raw_value = _cleaned(o.value, schema[o.value], o)
        checks.append((raw_value.is_not_null() & value.is_null(), o.value, "value is not a number"))
        checks.append((value.is_infinite(), o.value, "value is infinite"))
        # NaN is how many tools write "no value": the event is kept without one.
        value = pl.when(value.is_nan()).then(None).otherwise(value)

    if o.order is None:
        # Input order across all files: a stable tie-break without a window over entities.
        order = pl.col(ROW).cast(pl.Int64) - 1 + order_offset
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

    reason = _first_failing(checks, lambda check: check[2])
    column = _first_failing(checks, lambda check: check[1])

    attributes = [
        pl.col(a).cast(pl.String) if attributes_as_text else pl.col(a) for a in o.attributes
    ]
    return frame.select(
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
        (pl.col(ROW).cast(pl.Int64) + source.line_offset).alias(ROW),
        reason.alias(REASON),
        column.alias(REJECT_COLUMN),
    )


def _count_rows(
    parsed: list[pl.LazyFrame], sources: list[TabularSource], progress: Progress
) -> list[int]:
    """Data rows per file, by a streaming pass that parses every mapped cell, so that
    a malformed file fails here, with its name, rather than later in the corpus."""
    queries = [
        frame.select(
            pl.len().alias("rows"),
            pl.sum_horizontal(pl.all().exclude(ROW).null_count()).alias("nulls"),
        )
        for frame in parsed
    ]
    counts: list[int] = []
    for start in range(0, len(queries), FILES_PER_CHECK):
        batch = queries[start : start + FILES_PER_CHECK]
        try:
            results = pl.collect_all(batch, engine="streaming")
        except READ_ERRORS:
            # Find the file at fault by checking the batch one file at a time.
            for query, source in zip(batch, sources[start:], strict=False):
                try:
                    query.collect(engine="streaming")
                except READ_ERRORS as err:
                    raise InputError(
                        f"cannot read the file: {_first_line(err)}", file=source.path
                    ) from None
            raise
        counts.extend(int(result["rows"][0]) for result in results)
        progress.advance(len(batch))
    return counts


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
    files = discover_files([Path(p) for p in inputs])
    sources = [
        TabularSource(path=path, fmt=fmt, line_offset=0 if fmt == "parquet" else 1)
        for path, fmt in files
    ]
    attributes_as_text = any(s.fmt != "parquet" for s in sources)

    raw_frames, schemas = [], []
    for source in sources:
        frame = scan_source(source, options)
        schema = _guard_schema(frame, source.path)
        check_columns_present(options, [c for c in schema.names() if c != ROW], source.path)
        raw_frames.append(frame)
        schemas.append(schema)

    progress.start("reading tabular files", total=len(sources))
    # First pass without file offsets: counting rows does not depend on them.
    unordered = [
        parse_source(frame, schema, source, options, 0, attributes_as_text)
        for frame, schema, source in zip(raw_frames, schemas, sources, strict=True)
    ]
    rows = _count_rows(unordered, sources, progress)
    progress.finish()

    events_parts, reject_parts = [], []
    order_offset = 0
    for frame, schema, source, n_rows in zip(raw_frames, schemas, sources, rows, strict=True):
        parsed = parse_source(frame, schema, source, options, order_offset, attributes_as_text)
        order_offset += n_rows
        kept = parsed.filter(pl.col(REASON).is_null()).drop(ROW, REASON, REJECT_COLUMN)
        events_parts.append(kept)
        reject_parts.append(
            parsed.filter(pl.col(REASON).is_not_null()).select(
                pl.lit(str(source.path)).alias("file"),
                pl.col(ROW).alias("row"),
                pl.col(REJECT_COLUMN).alias("column"),
                pl.col(REASON).alias("reason"),
            )
        )

    rejects = RejectLog()
    rejects.extend(pl.concat(reject_parts, how="vertical"))
    try:
        stacked = pl.concat(events_parts, how="vertical_relaxed")
        stacked.collect_schema()
    except READ_ERRORS as err:
        raise InputError(
            f"the input files cannot be stacked (do the attribute columns hold the same "
            f"kind of values in every file?): {_first_line(err)}"
        ) from None
    events = EventTable.from_frame(stacked, attributes=options.attributes)
    settings = {
        "mapping": dataclasses.asdict(options),
        "inputs": [str(p) for p in inputs],
        "files": len(sources),
        "formats": sorted({s.fmt for s in sources}),
    }
    return Ingested(
        events=events, rejects=rejects, rows_read=sum(rows), adapter="tabular", settings=settings
    )
