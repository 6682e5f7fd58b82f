"""The tabular adapter's one checking pass, and its files offered as source partitions.

Each scan group (`tabular_files.ScanGroup`) is read once, every mapped cell parsed once,
by one streaming query with two outputs that share the scan: the rejected rows (file,
row, column, reason) and, per file, its data rows and the smallest and largest entity
of its kept rows. That pass gives the row counts, the reject log and the files' entity
ranges; the events themselves are parsed again only by the corpus build, which reads
them once.

When every file's kept entities lie in a range that no other file's range overlaps (a
folder of shards each holding whole entities, as an export by patient writes them) and
the files are not tiny (`MIN_ROWS_PER_PART` on average), the files are offered to the
corpus build as its partitions (`Ingested.source_parts`), as MEDS shards are: no hash
partition stage, no spill files. Otherwise the build hashes the events, as for any
source; the corpus is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from seqlm.corpora_adapters.tabular_files import (
    FILE,
    READ_ERRORS,
    ROW,
    ScanGroup,
    TabularSource,
    first_line,
    scan_files,
)
from seqlm.corpora_adapters.tabular_mapping import TabularOptions
from seqlm.errors import InputError

# Files are offered as source partitions only when they hold this many rows on average:
# each part is a scan of its own, whose fixed cost outweighs the partition stage it
# saves when files are small (a folder of thousands of tiny files is hashed).
MIN_ROWS_PER_PART = 5_000

# Rejected rows are left out of the events by their row numbers (the checks are not
# evaluated twice) up to this many in a scan group; beyond, by the checks again.
MAX_REJECTS_BY_NUMBER = 200_000

# The number of a row's first failed check (null: the row is kept).
REASON_CODE = "__seqlm_reject_code"
_TOUCH = "__seqlm_touch"


@dataclass(frozen=True)
class FileRange:
    """One file's data rows and the smallest and largest entity of its kept rows (None
    when it keeps none)."""

    rows: int
    low: str | None = None
    high: str | None = None


@dataclass(frozen=True)
class GroupPass:
    """What the checking pass of one scan group found."""

    files: dict[str, FileRange]  # keyed by the file's path as the scan names it
    rejects: pl.DataFrame  # FILE, ROW (0-based in the group), "column", "reason"


def check_group(
    parsed: tuple[pl.LazyFrame, list[tuple[str, str]]], group: ScanGroup, options: TabularOptions
) -> GroupPass:
    """Run the checking pass over `parsed` (`parse_rows` of the group's scan, with the
    FILE column when the group has several files); a file that cannot be read is an
    InputError that names it."""
    parsed_rows, labels = parsed
    kept = pl.col(REASON_CODE).is_null()
    names = parsed_rows.collect_schema().names()
    file = pl.col(FILE) if FILE in names else pl.lit(str(group.sources[0].path)).alias(FILE)
    # Every mapped column is read (its cells parsed) so that a malformed cell anywhere
    # fails here, naming its file, and not later in the corpus build.
    others = [c for c in ("group", "kind", "text", *options.attributes) if c in names]
    touched = [pl.any_horizontal(pl.col(others).is_null()).alias(_TOUCH)] if others else []
    query = parsed_rows.select(
        file, ROW, REASON_CODE, pl.when(kept).then(pl.col("entity")).alias("entity"), *touched
    )
    # One streaming query whose batches are reduced here: two queries sharing the scan
    # (`collect_all`) buffer rows without bound when one runs ahead (peak memory grew
    # with the input: 0.6 GB at 20M rows).
    rejects, stats = [], []
    try:
        for batch in query.collect_batches(engine="streaming"):
            rejects.append(batch.filter(~kept).select(FILE, ROW, REASON_CODE))
            stats.append(
                batch.group_by(FILE).agg(
                    pl.len().alias("rows"),
                    pl.col("entity").min().alias("low"),
                    pl.col("entity").max().alias("high"),
                )
            )
    except READ_ERRORS:
        _name_unreadable(group, options)
        raise
    schema = {FILE: pl.String, ROW: pl.UInt32, REASON_CODE: pl.UInt8}
    found = pl.concat(rejects) if rejects else pl.DataFrame(schema=schema)
    stats_schema = {FILE: pl.String, "rows": pl.UInt32, "low": pl.String, "high": pl.String}
    ranges_found = (
        pl.concat(stats).group_by(FILE).agg(pl.sum("rows"), pl.min("low"), pl.max("high"))
        if stats
        else pl.DataFrame(schema=stats_schema)
    )
    files = {
        name: FileRange(int(rows), low, high)
        for name, rows, low, high in ranges_found.select(FILE, "rows", "low", "high").iter_rows()
    }
    code = pl.col(REASON_CODE).cast(pl.Int64)
    named = found.select(
        FILE,
        ROW,
        code.replace_strict(dict(enumerate(c for c, _ in labels)), return_dtype=pl.String).alias(
            "column"
        ),
        code.replace_strict(dict(enumerate(r for _, r in labels)), return_dtype=pl.String).alias(
            "reason"
        ),
    )
    return GroupPass(files=files, rejects=named)


def _name_unreadable(group: ScanGroup, options: TabularOptions) -> None:
    """Raise an InputError naming the group's first file that cannot be read."""
    for source in group.sources:
        scan = scan_files([source.path], source.fmt, options, row_index=False)
        try:
            scan.select(pl.col(options.input_columns()).null_count()).collect(engine="streaming")
        except READ_ERRORS as err:
            raise InputError(f"cannot read the file: {first_line(err)}", file=source.path) from None


def rejects_in_files(found: pl.DataFrame, group: ScanGroup) -> pl.DataFrame:
    """The pass's rejects with 1-based rows in their own files (plus the CSV header)."""
    file_start = pl.col(FILE).replace_strict(group.file_starts(), return_dtype=pl.Int64)
    return found.select(
        pl.col(FILE).alias("file"),
        (pl.col(ROW) - file_start + 1 + group.sources[0].line_offset).alias("row"),
        "column",
        "reason",
    )


def disjoint_files(ranges: list[FileRange], rows_read: int) -> bool:
    """Whether the files can be the build's partitions: no entity in two files (their
    kept entities' ranges do not overlap) and `MIN_ROWS_PER_PART` rows a file on average."""
    if len(ranges) < 2 or rows_read < MIN_ROWS_PER_PART * len(ranges):
        return False
    spans = sorted((r.low, r.high) for r in ranges if r.low is not None and r.high is not None)
    return all(high < low for (_, high), (low, _) in zip(spans, spans[1:], strict=False))


def file_groups(group: ScanGroup, rejected: pl.Series) -> list[tuple[ScanGroup, pl.Series]]:
    """Each file of `group` as a group of its own, its rows numbered as in the group,
    with its rejected rows (`rejected`: the group's) numbered in the file."""
    singles, start = [], 0
    for source in group.sources:
        mine = rejected.filter((rejected >= start) & (rejected < start + source.rows)) - start
        singles.append((ScanGroup((source,), group.first_order + start), mine))
        start += source.rows
    return singles


def counted(sources: list[TabularSource], files: dict[str, FileRange]) -> list[TabularSource]:
    """The sources with their data-row counts from the pass (Parquet: kept as counted)."""
    return [
        s
        if s.fmt == "parquet"
        else TabularSource(s.path, s.fmt, s.schema, files.get(str(s.path), FileRange(0)).rows)
        for s in sources
    ]
