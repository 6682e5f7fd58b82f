"""Dataset-wide checks and summaries of a MEDS dataset, each from a small aggregate.

The split check looks at the distinct subjects of each shard (its `subject_id` column
alone; a shard's folder is one split), and the code summary at the raw `code`,
`subject_id` and `time` columns: neither reads the other columns nor the reader's
joined rows. The rows a message names are looked up only when a check fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from seqlm.corpora_adapters.meds_layout import MedsDataset, MedsShard
from seqlm.errors import InputError


def _raw(shards: list[MedsShard], columns: list[str], stored: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Columns of the shards as stored, `subject_id` and `code` as strings (unless
    named in `stored`: kept as stored), `time` as `untimed` (whether it is null); one
    multi-file scan per set of column types."""
    groups: dict[tuple, list[MedsShard]] = {}
    for shard in shards:
        groups.setdefault(tuple(str(shard.schema[c]) for c in columns), []).append(shard)

    def read(column: str) -> pl.Expr:
        if column == "time":
            return pl.col(column).is_null().alias("untimed")
        return pl.col(column) if column in stored else pl.col(column).cast(pl.String)

    exprs = [read(c) for c in columns]
    # Shards may differ in columns outside these (MEDS allows extra ones per shard).
    frames = [
        pl.scan_parquet(
            [s.path for s in group], glob=False, missing_columns="insert", extra_columns="ignore"
        ).select(exprs)
        for group in groups.values()
    ]
    return pl.concat(frames, how="vertical_relaxed")


def _split_pairs(dataset: MedsDataset) -> pl.DataFrame:
    """Distinct (entity, folder_split) over the shards in split folders."""
    folders: dict[str, list[MedsShard]] = {}
    for shard in dataset.shards:
        if shard.folder_split:
            folders.setdefault(shard.folder_split, []).append(shard)
    # Distinct ids first, then as strings (the cast is one to one): far fewer casts.
    frames = [
        _raw(shards, ["subject_id"], stored=("subject_id",))
        .drop_nulls()
        .unique()
        .select(pl.col("subject_id").cast(pl.String).alias("entity"), folder_split=pl.lit(split))
        for split, shards in folders.items()
    ]
    return pl.concat(frames).collect(engine="streaming")


def _places(rows: pl.LazyFrame, entities: pl.Series) -> pl.DataFrame:
    """Where each of `entities` first appears in each split folder, in file order."""
    return (
        rows.filter(
            pl.col("entity").is_in(entities.implode()) & pl.col("folder_split").is_not_null()
        )
        .group_by("entity", "folder_split")
        .agg(pl.col("file", "row").sort_by("order").first())
        .collect(engine="streaming")
        .sort("file", "row")
    )


def check_split_consistency(
    rows: pl.LazyFrame, dataset: MedsDataset, splits: pl.DataFrame | None
) -> None:
    """A subject must sit in one split: one split folder, agreeing with the metadata."""
    if not any(shard.folder_split for shard in dataset.shards):
        return
    pairs = _split_pairs(dataset)
    twice = pairs.filter(pl.len().over("entity") > 1)["entity"].unique()
    if twice.len():
        places = _places(rows, twice)
        first = places.filter(pl.col("entity") == places["entity"][0]).rows(named=True)
        a, b = first[0], first[1]
        raise InputError(
            f"subject is in two splits: {a['folder_split']!r} (first at {a['file']} row "
            f"{a['row']}) and {b['folder_split']!r} (first at {b['file']} row {b['row']})",
            file=dataset.root / b["file"],
            row=b["row"],
            column="subject_id",
        )
    if splits is None:
        return
    disagree = pairs.join(splits, on="entity").filter(
        pl.col("split").is_not_null() & (pl.col("split") != pl.col("folder_split"))
    )
    if disagree.height:
        places = _places(rows, disagree["entity"])
        places = places.join(splits, on="entity", maintain_order="left")
        place = places.row(0, named=True)
        raise InputError(
            f"subject's rows are in split folder {place['folder_split']!r} but "
            f"metadata/subject_splits.parquet puts it in {place['split']!r}",
            file=dataset.root / place["file"],
            row=place["row"],
            column="subject_id",
        )


def check_sorted(rows: pl.LazyFrame, dataset: MedsDataset) -> None:
    """InputError at the first row whose time is earlier than a previous row's time for
    the same subject in the same shard (MEDS requires time order within a subject)."""
    time = pl.col("time").sort_by("row")
    row = pl.col("row").sort()
    late = (
        rows.filter(pl.col("entity").is_not_null() & pl.col("time").is_not_null())
        .group_by("file", "entity")
        .agg(bad=row.filter(time < time.cum_max().shift(1)).first())
        .filter(pl.col("bad").is_not_null())
        .select("file", "bad")
        .sort("file", "bad")
        .collect(engine="streaming")
    )
    if late.height:
        file, bad = late.row(0)
        raise InputError(
            "events of a subject are not in time order (set unsorted = 'sort' to sort them)",
            file=dataset.root / file,
            row=int(bad),
            column="time",
        )


@dataclass(frozen=True)
class CodeSummary:
    used: int  # distinct codes in the data
    missing_from_metadata: int | None  # of those, absent from codes.parquet (None: no file)
    static_kinds: tuple[str, ...]  # kinds (first `//` segment) seen with null time


def code_summary(dataset: MedsDataset) -> CodeSummary:
    """Which codes the data uses, against metadata/codes.parquet, in one pass over the
    raw `subject_id`, `code` and `time` columns (text codes read as dictionaries:
    `_dictionary_codes`; others, or a shard pyarrow cannot read, grouped by polars).

    A missing or incomplete codes.parquet is common in real exports and never an error.
    """
    # pyarrow here, not at the top: the corpus build's workers import this module with
    # the adapter and need none of it (0.2 s of imports each).
    from pyarrow.lib import ArrowException

    used = None
    if all(isinstance(shard.schema.get("code"), pl.String) for shard in dataset.shards):
        try:
            used = _dictionary_codes(dataset)
        except (ArrowException, OSError):  # polars' pass below reports it as before
            used = None
    if used is None:
        used = (
            _raw(list(dataset.shards), ["subject_id", "code", "time"], stored=("subject_id",))
            .filter(pl.col("code").is_not_null() & pl.col("subject_id").is_not_null())
            .group_by("code")
            .agg(static=pl.col("untimed").any())
            .collect(engine="streaming")
        )
    static = used.filter("static")["code"].str.split("//").list.first().unique().sort()
    path = dataset.metadata / "codes.parquet"
    try:
        described = pl.read_parquet(path, columns=["code"], glob=False)
    except (pl.exceptions.PolarsError, OSError):
        missing = None
    else:
        described = described.select(pl.col("code").cast(pl.String))
        missing = used.join(described, on="code", how="anti").height
    return CodeSummary(used.height, missing, tuple(static.to_list()))


def _dictionary_codes(dataset: MedsDataset) -> pl.DataFrame:
    """`code_summary`'s distinct codes (`code`, `static`) of shards whose `code` is text:
    each row group's codes read as a dictionary (the distinct strings once, the rows as
    numbers), `subject_id` and `time` only where their statistics do not rule out a
    null. Hashing every row's code string cost twice as much (x20: 1.1 -> 0.6 CPU s,
    before the workers start)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    used: list[pl.Series] = []
    static: list[pl.Series] = []
    for shard in dataset.shards:
        file = pq.ParquetFile(shard.path, read_dictionary=["code"])
        # Statistics are per leaf column: an extra list or struct column has its own.
        leaves = file.metadata.schema
        names = [leaves.column(i).path for i in range(file.metadata.num_columns)]
        for group in range(file.metadata.num_row_groups):
            chunk = file.metadata.row_group(group)
            columns = ["code"]
            columns += [c for c in ("subject_id", "time") if _may_be_null(chunk, names, c)]
            table = file.read_row_group(group, columns=columns)
            code = table.column("code").combine_chunks()
            valid = pc.is_valid(code)
            if "subject_id" in columns:
                valid = pc.and_(valid, pc.is_valid(table.column("subject_id").combine_chunks()))
            used.append(_distinct(pc.filter(code, valid)))
            if "time" in columns:
                untimed = pc.and_(valid, pc.is_null(table.column("time").combine_chunks()))
                static.append(_distinct(pc.filter(code, untimed)))
    # pyarrow's allocator keeps freed pages (about 0.1 GB after x20) for the rest of
    # the build unless told to hand them back.
    pa.default_memory_pool().release_unused()
    codes = pl.concat(used).unique() if used else pl.Series("code", [], dtype=pl.String)
    statics = pl.concat(static) if static else pl.Series("code", [], dtype=pl.String)
    return pl.DataFrame({"code": codes}).with_columns(
        static=pl.col("code").is_in(statics.implode())
    )


def _may_be_null(chunk: Any, names: list[str], column: str) -> bool:
    """Whether a row group's `column` may hold a null (no statistics: it may)."""
    if column not in names:
        return False
    statistics = chunk.column(names.index(column)).statistics
    return statistics is None or not statistics.has_null_count or statistics.null_count > 0


def _distinct(codes: Any) -> pl.Series:
    """The distinct strings of a dictionary array, as a String series."""
    import pyarrow.compute as pc

    strings = codes.dictionary.take(pc.unique(codes.indices))
    return pl.Series("code", pl.from_arrow(strings), dtype=pl.String)
