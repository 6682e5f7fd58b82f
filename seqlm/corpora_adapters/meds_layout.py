"""The MEDS folder layout: finding shards, checking their columns, splits and metadata.

MEDS 0.3 and 0.4 put events in `data/**/*.parquet` (shards, possibly nested, often in
`data/<split>/` folders) and metadata in `metadata/` (`codes.parquet`,
`subject_splits.parquet`, `dataset.json`). Real exports differ in the details, so this
module accepts the standard rather than one sample: nested shards, split folders with
other names (`test`, `val`, `split=train`), `time` as datetime of any unit or time zone,
`numeric_value` as float32 or float64, any number of extra columns, and shards that
differ from one another in these (one shard's extra column, or `subject_id` as int32 in
one and int64 or text in another: tests/corpus/test_source_parts.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.corpora_adapters.inflation import check_parquet_inflation
from seqlm.errors import ConfigError, InputError
from seqlm.events import SPLITS

TIME_DTYPE = pl.Datetime("us")
# A shard over this many rows is offered to the corpus builder in pieces of at most
# this many, cut between subjects (`shard_pieces`): the builder reads a partition whole,
# and its default partition (seqlm.corpus.source_parts.DEFAULT_ROWS_PER_BUCKET) is as
# large. A full MIMIC-IV export has shards of millions of rows.
SHARD_PIECE_ROWS = 500_000
REQUIRED_COLUMNS = ("subject_id", "time", "code")

# Folder and split names seen in MEDS exports, mapped to the canonical three.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "tuning": "tuning",
    "tune": "tuning",
    "val": "tuning",
    "valid": "tuning",
    "validation": "tuning",
    "dev": "tuning",
    "held_out": "held_out",
    "heldout": "held_out",
    "held-out": "held_out",
    "test": "held_out",
    "testing": "held_out",
}


@dataclass(frozen=True)
class MedsShard:
    path: Path
    relative: str  # posix path relative to the dataset root: what rejects name
    folder_split: str | None  # from data/<split>/..., canonical name, or None
    rows: int
    schema: pl.Schema


@dataclass(frozen=True)
class MedsDataset:
    root: Path
    shards: tuple[MedsShard, ...]
    info: dict[str, str]  # the descriptive strings of metadata/dataset.json

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"


def canonical_split(name: str, extra: Mapping[str, str]) -> str | None:
    """`train`/`tuning`/`held_out` for a split or folder name, or None if not a split."""
    key = name.split("=", 1)[-1].strip().lower()
    lowered = {k.lower(): v for k, v in extra.items()}
    return lowered.get(key) or SPLIT_ALIASES.get(key)


def _check_split_folders(extra: Mapping[str, str]) -> None:
    for folder, split in extra.items():
        if split not in SPLITS:
            raise ConfigError(
                f"split_folders: {folder!r} maps to {split!r}; splits are {', '.join(SPLITS)}"
            )


def _shard_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _data_folder(common: Path) -> Path:
    """The nearest `data` folder at or above `common` that sits beside `metadata/`."""
    for folder in (common, *common.parents):
        if folder.name == "data" and (folder.parent / "metadata").is_dir():
            return folder
    return common


def _read_shard(path: Path, root: Path, data_dir: Path, extra: Mapping[str, str]) -> MedsShard:
    try:
        scan = pl.scan_parquet(path, glob=False)  # a folder may be named [x]
        schema = scan.collect_schema()
        rows = scan.select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise InputError(f"not a readable parquet file: {err}", file=path) from None
    check_parquet_inflation(path, int(rows), len(schema))
    inside = path.relative_to(data_dir).parts
    folder_split = canonical_split(inside[0], extra) if len(inside) > 1 else None
    return MedsShard(
        path=path,
        relative=path.relative_to(root).as_posix(),
        folder_split=folder_split,
        rows=int(rows),
        schema=schema,
    )


def locate_dataset(inputs: Sequence[Path], split_folders: Mapping[str, str]) -> MedsDataset:
    """Find the shards and the dataset root from the dataset folder, `data/`, or files."""
    _check_split_folders(split_folders)
    if not inputs:
        raise ConfigError("no MEDS input given")
    for path in inputs:
        if not path.exists():
            raise InputError("input not found", file=path)
    inputs = [p.resolve() for p in inputs]
    if len(inputs) == 1 and inputs[0].is_dir():
        folder = inputs[0]
        if (folder / "data").is_dir():
            root, data_dir = folder, folder / "data"
        elif folder.name == "data":
            root, data_dir = folder.parent, folder
        else:
            root = data_dir = folder
        files = _shard_files(data_dir)
    else:
        files = []
        for path in inputs:
            if path.is_dir():
                files.extend(_shard_files(path))
            elif path.suffix == ".parquet":
                files.append(path)
            else:
                raise InputError("not a parquet shard or a MEDS folder", file=path)
        files = sorted(set(files))
        if not files:
            raise InputError("no parquet shards found", file=inputs[0])
        data_dir = _data_folder(Path(os.path.commonpath([f.parent for f in files])))
        root = data_dir.parent if data_dir.name == "data" else data_dir
    if not files:
        raise InputError("no parquet shards (*.parquet) found", file=data_dir)
    shards = tuple(_read_shard(f, root, data_dir, split_folders) for f in files)
    return MedsDataset(root=root, shards=shards, info=dataset_info(root))


def count_rows(inputs: Sequence[Path], options: Any) -> int:
    """The dataset's rows from its shards' metadata (`AdapterSpec.count_rows`)."""
    dataset = locate_dataset([Path(p) for p in inputs], options.split_folders)
    return sum(shard.rows for shard in dataset.shards)


def dataset_info(root: Path) -> dict[str, str]:
    """The descriptive strings of `metadata/dataset.json` (name, versions), if any."""
    path = root / "metadata" / "dataset.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not valid JSON: {err}", file=path) from None
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _column(shard: MedsShard, name: str, kinds: str, ok: bool, expr: pl.Expr) -> pl.Expr:
    if not ok:
        raise InputError(
            f"column {name!r} has type {shard.schema[name]}; MEDS requires {kinds}",
            file=shard.path,
            column=name,
        )
    return expr.alias(name)


def _shard_columns(
    shard: MedsShard, suffix_columns: Sequence[str], integer_ids: bool = False
) -> list[pl.Expr]:
    """The shard's columns cast to the reader's types; wrong types are InputErrors.
    `integer_ids`: an integer `subject_id` stays an integer (its name is its decimal
    string, `cast(pl.String)`), for readers that name subjects once each."""
    schema = shard.schema
    for name in REQUIRED_COLUMNS:
        if name not in schema:
            raise InputError(
                f"no {name!r} column (MEDS shards need subject_id, time, code)",
                file=shard.path,
                column=name,
            )
    null = pl.Null()
    textual = (pl.String, pl.Categorical, pl.Enum)
    sid, time, code = schema["subject_id"], schema["time"], schema["code"]
    if isinstance(time, pl.Datetime):
        time_expr = pl.col("time")
        if time.time_zone is not None:
            time_expr = time_expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        time_expr = time_expr.dt.cast_time_unit("us")
    else:
        time_expr = pl.col("time").cast(TIME_DTYPE)
    columns = [
        _column(
            shard,
            "subject_id",
            "an integer or string id",
            sid.is_integer() or isinstance(sid, textual) or sid == null,
            pl.col("subject_id")
            if integer_ids and sid.is_integer()
            else pl.col("subject_id").cast(pl.String),
        ).alias("entity"),
        _column(
            shard,
            "time",
            "a timestamp (datetime) or null",
            isinstance(time, pl.Datetime | pl.Date) or time == null,
            time_expr,
        ),
        _column(
            shard,
            "code",
            "a string",
            isinstance(code, textual) or code == null,
            pl.col("code").cast(pl.String),
        ),
    ]
    value = schema.get("numeric_value")
    if value is None:
        columns.append(pl.lit(None, dtype=pl.Float64).alias("value"))
    else:
        numeric = value.is_numeric() or value == null
        expr = pl.col("numeric_value").cast(pl.Float64)
        columns.append(_column(shard, "numeric_value", "numbers", numeric, expr).alias("value"))
    if "text_value" in schema:
        columns.append(pl.col("text_value").cast(pl.String).alias("text"))
    else:
        columns.append(pl.lit(None, dtype=pl.String).alias("text"))
    # Extra columns may be absent from some shards (exports vary); they read as null.
    columns.extend(
        (pl.col(c).cast(pl.String) if c in schema else pl.lit(None, dtype=pl.String)).alias(
            f"suffix__{c}"
        )
        for c in suffix_columns
    )
    return columns


def scan_rows(
    dataset: MedsDataset,
    suffix_columns: Sequence[str] = (),
    only: Sequence[int] | None = None,
    piece: tuple[int, int] | None = None,
    integer_ids: bool = False,
) -> pl.LazyFrame:
    """All shards (or the shards numbered `only`) as one lazy frame: `file`, `row`
    (1-based in its shard), `order` (global file order over all shards, the tie-break
    for equal times), `folder_split`, then `entity`, `time`, `code`, `value`, `text` and
    the requested `suffix__<column>` columns. `piece` = (first row, rows): only those
    rows of the one shard in `only` (read from the file alone). `integer_ids`: an
    integer `subject_id` is left an integer (`_shard_columns`; for one shard, since
    shards may differ in its type)."""
    for name in suffix_columns:
        if not any(name in shard.schema for shard in dataset.shards):
            raise InputError(
                "code_suffix_columns names a column that no shard has",
                file=dataset.root / "data",
                column=name,
            )
    # Shards with the same schema are read by one multi-file scan whose row index runs
    # across them (polars streams that in flat memory; 1,000 scans with a row index
    # each, concatenated, do not); a small join turns it into the row within the shard.
    groups: dict[tuple, list[int]] = {}
    for number, shard in enumerate(dataset.shards):
        if only is None or number in only:
            groups.setdefault(tuple(shard.schema.items()), []).append(number)
    starts = [0]
    for shard in dataset.shards:
        starts.append(starts[-1] + shard.rows)
    if len(groups) == 1 and len(next(iter(groups.values()))) == 1:
        return _scan_one(
            dataset, next(iter(groups.values()))[0], starts[:-1], suffix_columns, piece, integer_ids
        )
    frames = []
    for numbers in groups.values():
        shards = [dataset.shards[n] for n in numbers]
        before = [0]
        for shard in shards[:-1]:
            before.append(before[-1] + shard.rows)
        table = pl.DataFrame(
            {
                "_path": [str(shard.path) for shard in shards],
                "_before": before,
                "_start": [starts[n] for n in numbers],
                "file": [shard.relative for shard in shards],
                "folder_split": [shard.folder_split for shard in shards],
            },
            schema={
                "_path": pl.String,
                "_before": pl.Int64,
                "_start": pl.Int64,
                "file": pl.String,
                "folder_split": pl.String,
            },
        )
        row = pl.col("_index").cast(pl.Int64) - pl.col("_before") + 1
        scan = pl.scan_parquet(
            [shard.path for shard in shards],
            row_index_name="_index",
            include_file_paths="_path" if len(shards) > 1 else None,
            glob=False,
        )
        if piece is not None:
            scan = scan.slice(*piece)
        frames.append(
            _with_shard_facts(scan, table).select(
                "file",
                row.alias("row"),
                (pl.col("_start") + row).alias("order"),
                "folder_split",
                *_shard_columns(shards[0], suffix_columns, integer_ids),
            )
        )
    return pl.concat(frames, how="vertical")


def _scan_one(
    dataset: MedsDataset,
    number: int,
    starts: list[int],
    suffix_columns: Sequence[str],
    piece: tuple[int, int] | None,
    integer_ids: bool,
) -> pl.LazyFrame:
    """`scan_rows` of one shard (the corpus builder's parts: two plans per shard or
    piece), its facts put in as constants without the table and join of several
    shards (x20: 160 plans, 0.3 -> 0.1 s). The same columns and values."""
    shard = dataset.shards[number]
    scan = pl.scan_parquet([shard.path], row_index_name="_index", glob=False)
    if piece is not None:
        scan = scan.slice(*piece)
    row = pl.col("_index").cast(pl.Int64) + 1
    return scan.select(
        pl.lit(shard.relative, pl.String).alias("file"),
        row.alias("row"),
        (pl.lit(starts[number], pl.Int64) + row).alias("order"),
        pl.lit(shard.folder_split, pl.String).alias("folder_split"),
        *_shard_columns(shard, suffix_columns, integer_ids),
    )


def _with_shard_facts(scan: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """The scan's rows with their shard's row `table` facts: a join on each row's file
    path, or for one shard (the corpus builder's partitions) its facts as constants."""
    if table.height > 1:
        return scan.join(
            table.lazy(), on="_path", how="inner", build_side="force_right", maintain_order="left"
        )
    return scan.with_columns(
        pl.lit(value, table.schema[name]).alias(name)
        for name, value in table.drop("_path").row(0, named=True).items()
    )


def metadata_splits(dataset: MedsDataset, extra: Mapping[str, str]) -> pl.DataFrame | None:
    """`entity`, `split` from metadata/subject_splits.parquet, or None if it is absent.

    Split names outside the three canonical ones (and their aliases) become null, so
    the corpus's [splits] config assigns those subjects.
    """
    path = dataset.metadata / "subject_splits.parquet"
    if not path.is_file():
        return None
    try:
        table = pl.read_parquet(path, glob=False)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise InputError(f"not a readable parquet file: {err}", file=path) from None
    for name in ("subject_id", "split"):
        if name not in table.columns:
            raise InputError(f"no {name!r} column", file=path, column=name)
    names = table["split"].cast(pl.String).unique().drop_nulls().to_list()
    mapping = {name: canonical_split(name, extra) for name in names}
    table = table.select(
        pl.col("subject_id").cast(pl.String).alias("entity"),
        pl.col("split").cast(pl.String).replace_strict(mapping, default=None).alias("split"),
    ).with_row_index("row", offset=1)
    conflicts = table.filter(pl.col("split").n_unique().over("entity") > 1)
    if conflicts.height:
        first = conflicts.filter(pl.col("entity") == conflicts["entity"][0])
        rows, splits = first["row"].to_list(), first["split"].to_list()
        raise InputError(
            f"subject listed in two splits: {splits[0]!r} (row {rows[0]}) and "
            f"{splits[1]!r} (row {rows[1]})",
            file=path,
            row=int(rows[1]),
            column="split",
        )
    return table.select("entity", "split").unique(subset="entity", keep="first")


def source_splits(
    dataset: MedsDataset, option: str, extra: Mapping[str, str]
) -> tuple[pl.DataFrame | None, str]:
    """(metadata splits or None, where the splits come from: the metadata file, `data
    folders` or `none`) for the adapter's `split_source` `option`."""
    if option in ("auto", "metadata"):
        splits = metadata_splits(dataset, extra)
        if splits is not None:
            return splits, "metadata/subject_splits.parquet"
        if option == "metadata":
            raise InputError(
                "split_source = 'metadata' but the dataset has no subject_splits.parquet",
                file=dataset.root / "metadata",
            )
    folder_splits = any(shard.folder_split for shard in dataset.shards)
    return None, "data folders" if option in ("auto", "folders") and folder_splits else "none"


def shard_pieces(shard: MedsShard, rows: int | None = None) -> list[tuple[int, int]]:
    """(first row, rows) of consecutive pieces of a shard, each of at most `rows` rows
    (`SHARD_PIECE_ROWS` when None) unless one subject's run of rows is longer, cut where
    `subject_id` changes (read from that column alone). A shard not in subject order may still have a subject in two
    pieces; the builder finds that and hashes the events instead."""
    rows = SHARD_PIECE_ROWS if rows is None else rows
    if shard.rows <= rows:
        return [(0, shard.rows)]
    ids = pl.scan_parquet(shard.path, glob=False).select("subject_id").collect()["subject_id"]
    starts = (ids != ids.shift(1)).fill_null(True).arg_true().to_numpy()
    pieces, first = [], 0
    while shard.rows - first > rows:
        # The last subject start within `rows` of `first`, else the next one after it.
        inside = starts[(starts > first) & (starts <= first + rows)]
        later = starts[starts > first + rows]
        cut = int(inside[-1]) if inside.size else int(later[0]) if later.size else shard.rows
        pieces.append((first, cut - first))
        first = cut
    if first < shard.rows:
        pieces.append((first, shard.rows - first))
    return pieces


def metadata_notes(
    dataset: MedsDataset, split_option: str, split_source: str, no_codes_file: bool
) -> list[str]:
    """What the ingest used instead of MEDS metadata that is absent (printed, and kept in
    the manifest): a folder without `metadata/` must not pass without a word.
    `split_option`: the adapter's `split_source` option."""
    notes = []
    if not dataset.metadata.is_dir():
        notes.append(
            f"{dataset.root} has no metadata/ folder: no dataset.json (name and version "
            "unrecorded) and no codes.parquet (code descriptions unknown)"
        )
    elif no_codes_file:
        notes.append("no metadata/codes.parquet: code descriptions unknown, codes kept as written")
    if split_source == "none":
        cause = (
            "split_source = 'none'"
            if split_option == "none"
            else "no subject_splits.parquet and no data/<split>/ folders"
        )
        notes.append(
            f"{cause}: subjects are split by seqlm's own seeded hash (splits.seed, "
            "splits.tuning, splits.held_out; `seqlm config show --table splits`)"
        )
    return notes
