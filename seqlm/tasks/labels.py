"""Task labels in the MEDS label schema, read and matched to a corpus.

A MEDS label file has `subject_id` (int), `prediction_time` (timestamp) and one value
column: `boolean_value`, `integer_value`, `float_value` or `categorical_value`. Labels
come as one parquet file or a folder of shards (every `*.parquet` below it, in path
order). Rows that cannot be used are never dropped silently: each is a reject with its
file, 1-based row and reason, counted and written to `rejects.parquet` by the runner.

Reasons: `null subject_id`, `null prediction_time`, `null label`, `subject not in the
corpus`, `prediction time before the subject's first event`, `prediction time after the
subject's last event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from seqlm.corpus.store import Corpus
from seqlm.errors import ConfigError, InputError

VALUE_COLUMNS = ("boolean_value", "integer_value", "float_value", "categorical_value")
REJECT_SCHEMA = {"file": pl.String, "row": pl.Int64, "column": pl.String, "reason": pl.String}


@dataclass
class TaskLabels:
    """Labels read from files: `frame` has `subject_id`, `prediction_time`, `label`
    (the value column, renamed), `file`, `row`; `value_column` says which one it was."""

    frame: pl.DataFrame
    value_column: str
    rejects: pl.DataFrame
    files: list[Path]

    @property
    def rows_read(self) -> int:
        return self.frame.height + self.rejects.height


@dataclass
class MatchedLabels:
    """Labels whose subject and prediction time fit the corpus, one row each:
    `subject_id`, `prediction_time`, `label`, `seq_id`, `split`, `file`, `row`."""

    frame: pl.DataFrame
    value_column: str
    rejects: pl.DataFrame
    rows_read: int

    def split(self, name: str) -> pl.DataFrame:
        return self.frame.filter(pl.col("split") == name)


def label_files(path: str | Path) -> list[Path]:
    """One parquet file, or every `*.parquet` below a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if files:
            return files
        raise InputError("no *.parquet label files in this folder", file=path)
    raise InputError("no such label file or folder", file=path)


def _value_column(file: Path, columns: list[str]) -> str:
    for required in ("subject_id", "prediction_time"):
        if required not in columns:
            raise InputError("missing (MEDS label schema)", file=file, column=required)
    present = [c for c in VALUE_COLUMNS if c in columns]
    if not present:
        raise InputError(
            f"no label value column (one of {', '.join(VALUE_COLUMNS)})",
            file=file,
            column="boolean_value",
        )
    # MEDS writers often add all four columns and fill one: take the first with values.
    return present[0]


def _read_one(file: Path) -> tuple[pl.DataFrame, str]:
    try:
        frame = pl.read_parquet(file, glob=False)
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise InputError(f"not a readable parquet file ({reason})", file=file) from None
    column = _value_column(file, frame.columns)
    filled = [c for c in VALUE_COLUMNS if c in frame.columns and frame[c].null_count() < len(frame)]
    if filled and column not in filled:
        column = filled[0]
    time_type = frame.schema["prediction_time"]
    if not isinstance(time_type, pl.Datetime):
        raise InputError(
            f"must be a timestamp, found {time_type}", file=file, column="prediction_time"
        )
    if not frame.schema["subject_id"].is_integer():
        raise InputError(
            f"must be an integer, found {frame.schema['subject_id']}",
            file=file,
            column="subject_id",
        )
    return frame, column


def _normalised(frame: pl.DataFrame, column: str, file: Path) -> pl.DataFrame:
    time = pl.col("prediction_time")
    if frame.schema["prediction_time"].time_zone is not None:  # type: ignore[union-attr]
        time = time.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return frame.with_row_index("row", offset=1).select(
        pl.col("subject_id").cast(pl.Int64),
        time.dt.cast_time_unit("us").alias("prediction_time"),
        pl.col(column).alias("label"),
        pl.lit(str(file)).alias("file"),
        pl.col("row").cast(pl.Int64),
    )


def _null_rejects(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    reasons = (
        pl.when(pl.col("subject_id").is_null())
        .then(pl.lit("null subject_id"))
        .when(pl.col("prediction_time").is_null())
        .then(pl.lit("null prediction_time"))
        .when(pl.col("label").is_null())
        .then(pl.lit("null label"))
    )
    columns = (
        pl.when(pl.col("subject_id").is_null())
        .then(pl.lit("subject_id"))
        .when(pl.col("prediction_time").is_null())
        .then(pl.lit("prediction_time"))
        .otherwise(pl.lit("label"))
    )
    marked = frame.with_columns(reasons.alias("reason"), columns.alias("column"))
    rejects = marked.filter(pl.col("reason").is_not_null()).select(*REJECT_SCHEMA)
    return marked.filter(pl.col("reason").is_null()).drop("reason", "column"), rejects


def read_labels(path: str | Path) -> TaskLabels:
    """Read MEDS label file(s); all shards must use the same value column."""
    files = label_files(path)
    frames, column = [], None
    for file in files:
        frame, found = _read_one(file)
        if column is not None and found != column:
            raise InputError(
                f"label column differs from the first shard's ({column})", file=file, column=found
            )
        column = found
        frames.append(_normalised(frame, found, file))
    assert column is not None
    try:
        combined = pl.concat(frames, how="vertical")
    except pl.exceptions.PolarsError as err:
        raise InputError(f"shards disagree on the label type ({err})", file=files[-1]) from None
    kept, rejects = _null_rejects(combined)
    return TaskLabels(kept, column, rejects.cast(REJECT_SCHEMA), files)  # type: ignore[arg-type]


def _entity_table(corpus: Corpus) -> pl.DataFrame:
    index = corpus.index
    if not isinstance(index.schema["first_time"], pl.Datetime):
        raise ConfigError(
            f"{corpus.path}: its times are not timestamps; MEDS labels need a corpus "
            "ingested from timestamped events (seqlm ingest meds)"
        )
    counts = index.group_by("entity").len()
    if counts["len"].max() > 1:  # type: ignore[operator]
        entity = counts.filter(pl.col("len") > 1)["entity"][0]
        raise ConfigError(
            f"{corpus.path}: entity {entity!r} owns several sequences; task labels need "
            "one sequence per subject"
        )
    return index.select(
        pl.col("entity"),
        "seq_id",
        "split",
        pl.col("first_time").dt.cast_time_unit("us"),
        pl.col("last_time").dt.cast_time_unit("us"),
    )


def match_labels(labels: TaskLabels, corpus: Corpus) -> MatchedLabels:
    """Join labels to the corpus's sequences; labels outside a record become rejects."""
    entities = _entity_table(corpus)
    joined = labels.frame.with_columns(pl.col("subject_id").cast(pl.String).alias("entity")).join(
        entities, on="entity", how="left"
    )
    time = pl.col("prediction_time")
    reason = (
        pl.when(pl.col("seq_id").is_null())
        .then(pl.lit("subject not in the corpus"))
        .when(time < pl.col("first_time"))
        .then(pl.lit("prediction time before the subject's first event"))
        .when(time > pl.col("last_time"))
        .then(pl.lit("prediction time after the subject's last event"))
    )
    marked = joined.with_columns(reason.alias("reason"))
    outside = marked.filter(pl.col("reason").is_not_null()).select(
        "file",
        "row",
        pl.when(pl.col("seq_id").is_null())
        .then(pl.lit("subject_id"))
        .otherwise(pl.lit("prediction_time"))
        .alias("column"),
        "reason",
    )
    kept = (
        marked.filter(pl.col("reason").is_null())
        .select("subject_id", "prediction_time", "label", "seq_id", "split", "file", "row")
        .sort("subject_id", "prediction_time", "row")
    )
    rejects = pl.concat([labels.rejects, outside.cast(REJECT_SCHEMA)], how="vertical")  # type: ignore[arg-type]
    return MatchedLabels(kept, labels.value_column, rejects, labels.rows_read)


def binary_targets(matched: MatchedLabels) -> pl.DataFrame:
    """The matched labels with `label` as 0/1 Int8; only binary tasks are predicted."""
    label = matched.frame["label"]
    if matched.value_column == "boolean_value":
        return matched.frame.with_columns(pl.col("label").cast(pl.Int8))
    if matched.value_column == "integer_value" and set(label.unique().to_list()) <= {0, 1}:
        return matched.frame.with_columns(pl.col("label").cast(pl.Int8))
    first = matched.frame.row(0, named=True) if matched.frame.height else {}
    raise InputError(
        "only binary tasks are predicted (boolean_value, or integer_value of 0/1); "
        f"this task has {matched.value_column}",
        file=first.get("file"),
        column=matched.value_column,
    )


def reject_counts(rejects: pl.DataFrame) -> dict[str, int]:
    """Rejects per reason (most frequent first), for task.json and the terminal."""
    counts = rejects.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    return {str(r): int(n) for r, n in counts.iter_rows()}
