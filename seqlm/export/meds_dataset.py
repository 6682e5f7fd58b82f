"""A MEDS 0.4 dataset folder from MEDS rows, and the checks a MEDS reader would make.

`write_meds_folder` writes what the MEDS standard (the `meds` package, 0.4.1) defines:

- `data/<split>/0.parquet`: one shard per split, in the MEDS data schema (`subject_id`
  int64 non-null, `time` timestamp[us] (null = static), `code` string non-null,
  `numeric_value` float32, `text_value` large_string), each subject in one shard, sorted
  by subject and time with its static rows first;
- `metadata/dataset.json`: `dataset_name`, `dataset_version`, `etl_name` ("seqlm"),
  `etl_version`, `meds_version`, `created_at` (ISO 8601, UTC);
- `metadata/codes.parquet`: every code of the data (`code`, `description`,
  `parent_codes` list<string>);
- `metadata/subject_splits.parquet`: `subject_id`, `split`.

`meds_dataset_problems` makes the same checks as the `meds` package's schemas
(`DataSchema`, `CodeMetadataSchema`, `SubjectSplitSchema`, `DatasetMetadataSchema`) plus
the standard's two data rules (a subject in one shard only; its rows contiguous and
sorted by time), without needing the package: one line per problem, empty when valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import seqlm

MEDS_VERSION = "0.4.1"  # the schemas below are the `meds` 0.4.1 package's
DATA_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        pa.field("text_value", pa.large_string()),
    ]
)
CODES_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_codes", pa.list_(pa.string())),
    ]
)
SPLITS_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)
DATASET_STRINGS = ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version")
DATASET_STRINGS += ("license", "location_uri", "description_uri")
DATASET_LISTS = (
    "raw_source_id_columns",
    "code_modifier_columns",
    "additional_value_modality_columns",
    "site_id_columns",
    "other_extension_columns",
)
DATA_FOLDER, METADATA_FOLDER = "data", "metadata"
DATASET_FILE, CODES_FILE, SPLITS_FILE = "dataset.json", "codes.parquet", "subject_splits.parquet"


def sorted_meds_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows by subject, then time with static (null-time) rows first; ties keep their order."""
    return rows.sort("subject_id", "time", nulls_last=False, maintain_order=True)


def _write_table(frame: pl.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = frame.select(schema.names).to_arrow()
    pq.write_table(table.cast(schema), path)


def write_meds_folder(
    rows: pl.DataFrame,
    folder: str | Path,
    splits: Mapping[int, str],
    *,
    name: str,
    version: str,
    descriptions: Mapping[str, str] | None = None,
) -> Path:
    """Write MEDS rows (columns of `seqlm.export.meds.MEDS_ROW_SCHEMA`) as a MEDS folder.

    `splits` gives every subject's split (its shard `data/<split>/0.parquet`);
    `descriptions` fill `codes.parquet`'s description for the codes they name.
    """
    folder = Path(folder)
    rows = sorted_meds_rows(rows)
    subjects = rows["subject_id"].unique().to_list()
    missing = [s for s in subjects if s not in splits]
    if missing:
        raise ValueError(f"no split for subjects {missing[:5]}")
    split_frame = pl.DataFrame(
        {"subject_id": list(splits), "split": list(splits.values())},
        schema={"subject_id": pl.Int64, "split": pl.String},
    ).sort("subject_id")
    with_split = rows.join(split_frame, on="subject_id", how="left", maintain_order="left")
    for split in sorted(set(splits.values())):
        shard = folder / DATA_FOLDER / split / "0.parquet"
        shard.parent.mkdir(parents=True, exist_ok=True)
        _write_table(with_split.filter(pl.col("split") == split), DATA_SCHEMA, shard)
    metadata = folder / METADATA_FOLDER
    metadata.mkdir(parents=True, exist_ok=True)
    info = {
        "dataset_name": name,
        "dataset_version": version,
        "etl_name": "seqlm",
        "etl_version": seqlm.__version__,
        "meds_version": MEDS_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (metadata / DATASET_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    codes = sorted(rows["code"].unique().to_list())
    described = descriptions or {}
    code_frame = pl.DataFrame(
        {
            "code": codes,
            "description": [described.get(c) for c in codes],
            "parent_codes": [None] * len(codes),
        },
        schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)},
    )
    _write_table(code_frame, CODES_SCHEMA, metadata / CODES_FILE)
    _write_table(split_frame, SPLITS_SCHEMA, metadata / SPLITS_FILE)
    return folder


# ----- checks -------------------------------------------------------------------------------


def _type_problems(schema: pa.Schema, want: pa.Schema, where: str, optional=()) -> list[str]:
    problems = []
    for field in want:
        if field.name not in schema.names:
            if field.name not in optional:
                problems.append(f"{where}: missing column {field.name}")
            continue
        got = schema.field(field.name).type
        if got != field.type:
            problems.append(f"{where}: column {field.name} is {got}, MEDS wants {field.type}")
    return problems


def _null_problems(table: pa.Table, columns: tuple[str, ...], where: str) -> list[str]:
    return [
        f"{where}: column {c} has {table.column(c).null_count} nulls"
        for c in columns
        if c in table.column_names and table.column(c).null_count
    ]


def _order_problems(frame: pl.DataFrame, where: str) -> list[str]:
    """A subject's rows contiguous, times never going back, static rows first."""
    problems = []
    runs = (pl.col("subject_id") != pl.col("subject_id").shift()).fill_null(True).sum()
    if frame.height and frame.select(runs).item() != frame["subject_id"].n_unique():
        problems.append(f"{where}: a subject's rows are not contiguous")
    before = pl.col("time").shift().over("subject_id")
    back = (pl.col("time") < before) | (pl.col("time").is_null() & before.is_not_null())
    if frame.height and frame.select(back.fill_null(False).any()).item():
        problems.append(f"{where}: rows of a subject are not sorted by time (static rows first)")
    return problems


def _shard_problems(shard: Path, where: str) -> tuple[list[str], pl.DataFrame | None]:
    schema = pq.read_schema(shard)
    problems = _type_problems(schema, DATA_SCHEMA, where, optional=("numeric_value", "text_value"))
    if problems:
        return problems, None
    table = pq.read_table(shard, columns=["subject_id", "time", "code"])
    problems += _null_problems(table, ("subject_id", "code"), where)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return problems + _order_problems(frame, where), frame


def _data_problems(root: Path) -> tuple[list[str], set[str], dict[int, str]]:
    """Problems of the shards, the codes they use, and the shard of each subject."""
    shards = sorted((root / DATA_FOLDER).rglob("*.parquet"))
    if not shards:
        return [f"{DATA_FOLDER}/: no parquet shards"], set(), {}
    problems: list[str] = []
    codes: set[str] = set()
    home: dict[int, str] = {}
    for shard in shards:
        where = str(shard.relative_to(root))
        found, frame = _shard_problems(shard, where)
        problems += found
        if frame is None:
            continue
        codes.update(frame["code"].drop_nulls().unique().to_list())
        for subject in frame["subject_id"].drop_nulls().unique().to_list():
            if subject in home:
                problems.append(f"subject {subject} is in two shards: {home[subject]}, {where}")
            home[subject] = where
    return problems, codes, home


def _codes_problems(root: Path, used: set[str]) -> list[str]:
    path = root / METADATA_FOLDER / CODES_FILE
    where = str(path.relative_to(root))
    if not path.is_file():
        return [f"{where}: missing"]
    table = pq.read_table(path)
    problems = _type_problems(table.schema, CODES_SCHEMA, where)
    problems += _null_problems(table, ("code",), where)
    if "code" in table.column_names:
        absent = sorted(used - set(table.column("code").drop_null().to_pylist()))
        if absent:
            problems.append(f"{where}: {len(absent)} codes of the data missing, e.g. {absent[0]}")
    return problems


def _splits_problems(root: Path, subjects: dict[int, str]) -> list[str]:
    path = root / METADATA_FOLDER / SPLITS_FILE
    where = str(path.relative_to(root))
    if not path.is_file():
        return []  # optional in MEDS
    table = pq.read_table(path)
    problems = _type_problems(table.schema, SPLITS_SCHEMA, where)
    extra = sorted(set(table.column_names) - set(SPLITS_SCHEMA.names))
    if extra:
        problems.append(f"{where}: extra columns {extra} (MEDS allows none)")
    problems += _null_problems(table, ("subject_id", "split"), where)
    if not problems:
        ids = table.column("subject_id").to_pylist()
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: a subject is listed twice")
        unlisted = sorted(set(subjects) - set(ids))
        if unlisted:
            problems.append(f"{where}: {len(unlisted)} subjects of the data have no split")
    return problems


def _dataset_json_problems(root: Path) -> list[str]:
    path = root / METADATA_FOLDER / DATASET_FILE
    where = str(path.relative_to(root))
    if not path.is_file():
        return [f"{where}: missing"]
    try:
        info: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{where}: not JSON ({err})"]
    if not isinstance(info, dict):
        return [f"{where}: not a JSON object"]
    problems = [
        f"{where}: {key} is not a string"
        for key in DATASET_STRINGS
        if key in info and not isinstance(info[key], str)
    ]
    problems += [
        f"{where}: {key} is not a list of strings"
        for key in DATASET_LISTS
        if key in info
        and not (isinstance(info[key], list) and all(isinstance(v, str) for v in info[key]))
    ]
    if "created_at" in info:
        try:
            datetime.fromisoformat(str(info["created_at"]))
        except ValueError:
            problems.append(f"{where}: created_at is not an ISO 8601 date-time")
    return problems


def meds_dataset_problems(folder: str | Path) -> list[str]:
    """What keeps `folder` from being a valid MEDS 0.4 dataset (see the module); [] if none."""
    root = Path(folder)
    problems, codes, subjects = _data_problems(root)
    problems += _codes_problems(root, codes)
    problems += _splits_problems(root, subjects)
    return problems + _dataset_json_problems(root)


__all__ = [
    "CODES_SCHEMA",
    "DATA_SCHEMA",
    "MEDS_VERSION",
    "SPLITS_SCHEMA",
    "meds_dataset_problems",
    "sorted_meds_rows",
    "write_meds_folder",
]
