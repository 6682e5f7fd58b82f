"""Finding, checking and scanning the tabular adapter's input files.

Files are checked one by one (their columns against the mapping, their row counts), then
read in *scan groups*: runs of consecutive files of one format and one schema, each read
by a single multi-file `pl.scan_csv` / `pl.scan_parquet`. One scan per group rather than
one per file because polars' streaming engine runs every input of a `concat` at once:
stacking a folder of hundreds of per-file scans made peak memory grow with the number of
files, where a multi-file scan stays flat. A typical folder of shards is one group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from polars.exceptions import PanicException, PolarsError

from seqlm.corpora_adapters.inflation import check_parquet_inflation
from seqlm.corpora_adapters.tabular_mapping import (
    TABULAR_SUFFIXES,
    TabularOptions,
    check_columns_present,
)
from seqlm.errors import InputError
from seqlm.progress import Progress

# Internal column names; the double underscore keeps them clear of users' columns.
ROW = "__seqlm_row"  # 0-based row within a scan group
FILE = "__seqlm_file"  # the file a row came from (reject plans only)

# Errors polars raises on malformed files (ragged CSV lines, bad UTF-8, corrupt Parquet);
# a panic is polars' last resort on input it cannot handle. All become InputErrors.
READ_ERRORS = (PolarsError, PanicException, OSError)

# How many files one `collect_all` counts at a time (files are counted concurrently).
FILES_PER_COUNT = 16


@dataclass(frozen=True)
class TabularSource:
    """One input file: how to read it, its columns and its number of data rows."""

    path: Path
    fmt: str  # "csv", "tsv" or "parquet"
    schema: pl.Schema
    rows: int = 0

    @property
    def line_offset(self) -> int:
        """Added to the 1-based data row to give the row a person sees (the CSV header)."""
        return 0 if self.fmt == "parquet" else 1


@dataclass(frozen=True)
class ScanGroup:
    """Consecutive files of one format and schema, read by one scan."""

    sources: tuple[TabularSource, ...]
    # The `order` of the group's first row: rows are numbered across the whole input.
    first_order: int

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.sources)

    def file_starts(self) -> dict[str, int]:
        """Each file's first 0-based row within the group, keyed as the scan names it."""
        starts, position = {}, 0
        for source in self.sources:
            starts[str(source.path)] = position
            position += source.rows
        return starts


def discover_files(inputs: list[Path]) -> list[tuple[Path, str]]:
    """(file, format) for every input file; folders give their tabular files, recursively.

    Folders yield the files whose suffix is in TABULAR_SUFFIXES (hidden files and other
    files such as READMEs are passed over), sorted by path. A file named explicitly is
    read as delimited text whatever its suffix, unless it ends in .parquet/.pq. CSV and
    Parquet files may be mixed: each is checked on its own and the results are stacked.
    """
    # Keyed by resolved path so a file named twice (or also inside a named folder) is
    # read once; the path kept is the one the user wrote, for messages and rejects.
    found: dict[Path, tuple[Path, str]] = {}
    for path in inputs:
        if path.is_dir():
            in_folder = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in TABULAR_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not in_folder:
                suffixes = ", ".join(TABULAR_SUFFIXES)
                raise InputError(f"folder holds no tabular files ({suffixes})", file=path)
            for p in in_folder:
                found.setdefault(p.resolve(), (p, TABULAR_SUFFIXES[p.suffix.lower()]))
        elif path.is_file():
            fmt = TABULAR_SUFFIXES.get(path.suffix.lower(), "csv")
            found.setdefault(path.resolve(), (path, fmt))
        else:
            raise InputError("input not found", file=path)
    if not found:
        raise InputError("no input files given")
    return list(found.values())


def scan_files(
    paths: list[Path],
    fmt: str,
    options: TabularOptions,
    *,
    row_index: bool = True,
    file_column: bool = False,
) -> pl.LazyFrame:
    """One lazy scan of files of one format, with a 0-based row index across them."""
    row_index_name = ROW if row_index else None
    file_paths = FILE if file_column else None
    if fmt == "parquet":
        # Columns outside the mapping may differ between files; the mapped ones were
        # checked in every file.
        return pl.scan_parquet(
            paths,
            row_index_name=row_index_name,
            include_file_paths=file_paths,
            glob=False,
            missing_columns="insert",
            extra_columns="ignore",
        )
    separator = options.separator or ("\t" if fmt == "tsv" else ",")
    # Every cell as a string: parsing is done by explicit non-strict casts, so that a
    # bad cell makes its row a reject instead of failing the whole file.
    return pl.scan_csv(
        paths,
        separator=separator,
        infer_schema=False,
        raise_if_empty=False,
        null_values=options.null_values or None,
        row_index_name=row_index_name,
        include_file_paths=file_paths,
        glob=False,
    )


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_schemas(files: list[tuple[Path, str]], options: TabularOptions) -> list[TabularSource]:
    """Each file's columns (a header or a footer read), checked against the mapping."""
    sources = []
    for path, fmt in files:
        try:
            schema = scan_files([path], fmt, options, row_index=False).collect_schema()
        except READ_ERRORS as err:
            raise InputError(f"cannot read the file: {first_line(err)}", file=path) from None
        check_columns_present(options, schema.names(), path)
        sources.append(TabularSource(path=path, fmt=fmt, schema=schema))
    return sources


def count_rows(
    sources: list[TabularSource], options: TabularOptions, progress: Progress
) -> list[TabularSource]:
    """The Parquet sources with their data-row counts (from their metadata, checked
    against inflation); delimited text is counted by the checking pass
    (`tabular_parse.check_group`), which reads every row once anyway."""
    mapped = options.input_columns()
    parquet = [s for s in sources if s.fmt == "parquet"]
    rows: dict[Path, int] = {}
    for start in range(0, len(parquet), FILES_PER_COUNT):
        batch = parquet[start : start + FILES_PER_COUNT]
        queries = [
            scan_files([s.path], s.fmt, options, row_index=False).select(pl.len()) for s in batch
        ]
        try:
            results = pl.collect_all(queries, engine="streaming")
        except READ_ERRORS:
            # Find the file at fault by counting the batch one file at a time.
            for query, source in zip(queries, batch, strict=True):
                try:
                    query.collect(engine="streaming")
                except READ_ERRORS as err:
                    raise InputError(
                        f"cannot read the file: {first_line(err)}", file=source.path
                    ) from None
            raise
        for source, result in zip(batch, results, strict=True):
            rows[source.path] = int(result.item())
            check_parquet_inflation(source.path, rows[source.path], len(mapped))
        progress.advance(len(batch))
    return [TabularSource(s.path, s.fmt, s.schema, rows.get(s.path, 0)) for s in sources]


def scan_groups(sources: list[TabularSource], options: TabularOptions) -> list[ScanGroup]:
    """Runs of consecutive files with the same format and the same mapped columns'
    names and types (CSV: the same header), each to be read by one scan."""

    def key(source: TabularSource) -> tuple:
        if source.fmt == "parquet":
            # Parquet columns are matched by name; only the mapped ones need to agree.
            return ("parquet", tuple((c, source.schema[c]) for c in options.input_columns()))
        # A multi-file CSV scan takes its columns from the first file: same header only.
        return (source.fmt, tuple(source.schema.names()))

    groups: list[ScanGroup] = []
    current: list[TabularSource] = []
    first_order = 0
    for source in sources:
        if current and key(current[-1]) != key(source):
            groups.append(ScanGroup(tuple(current), first_order))
            first_order += groups[-1].rows
            current = []
        current.append(source)
    if current:
        groups.append(ScanGroup(tuple(current), first_order))
    return groups
