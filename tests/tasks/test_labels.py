"""MEDS label files: one file or shards, value columns, rejects with reasons, bad input."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from helpers.shared_data import shared_path
from helpers.task_data import build_task_corpus, write_task_dataset

from seqlm.corpus import load_corpus
from seqlm.errors import InputError
from seqlm.tasks.labels import (
    binary_targets,
    match_labels,
    read_labels,
    reject_counts,
)

SCHEMA = {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean}


def _write(path, rows, schema=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=schema or SCHEMA, orient="row").write_parquet(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_task_dataset(tmp_path_factory.mktemp("labels"), "history", n_subjects=40)
    return load_corpus(build_task_corpus(root))


def test_the_mimic_demo_task_reads_as_74_labels_9_positive() -> None:
    folder = shared_path("clinical", "mimic-iv-demo-meds", "tasks", "icu_mortality_first_24h")
    labels = read_labels(folder)
    assert labels.value_column == "boolean_value"
    assert labels.frame.height == 74 and labels.rejects.height == 0
    assert int(labels.frame["label"].sum()) == 9


def test_a_folder_of_shards_reads_in_path_order(tmp_path) -> None:
    when = datetime(2100, 1, 2)
    _write(tmp_path / "b" / "1.parquet", [(2, when, True)])
    _write(tmp_path / "a" / "0.parquet", [(1, when, False), (3, None, True)])
    labels = read_labels(tmp_path)
    assert labels.frame["subject_id"].to_list() == [1, 2]
    assert labels.rejects.rows() == [
        (str(tmp_path / "a" / "0.parquet"), 2, "prediction_time", "null prediction_time")
    ]
    assert labels.rows_read == 3


def test_the_filled_value_column_is_used(tmp_path) -> None:
    schema = {**SCHEMA, "boolean_value": pl.Boolean, "integer_value": pl.Int64}
    rows = [(1, datetime(2100, 1, 2), None, 1), (2, datetime(2100, 1, 2), None, 0)]
    labels = read_labels(_write(tmp_path / "l.parquet", rows, schema))
    assert labels.value_column == "integer_value"
    assert labels.frame["label"].to_list() == [1, 0]


@pytest.mark.parametrize(
    ("frame", "column"),
    [
        (
            pl.DataFrame({"prediction_time": [datetime(2100, 1, 1)], "boolean_value": [True]}),
            "subject_id",
        ),
        (
            pl.DataFrame({"subject_id": [1], "prediction_time": [datetime(2100, 1, 1)]}),
            "boolean_value",
        ),
        (
            pl.DataFrame(
                {"subject_id": [1], "prediction_time": ["2100-01-01"], "boolean_value": [True]}
            ),
            "prediction_time",
        ),
    ],
)
def test_bad_files_name_the_file_and_column(tmp_path, frame, column) -> None:
    path = tmp_path / "bad.parquet"
    frame.write_parquet(path)
    with pytest.raises(InputError) as caught:
        read_labels(path)
    assert caught.value.file == str(path) and caught.value.column == column


def test_a_file_that_is_not_parquet_is_an_input_error(tmp_path) -> None:
    path = tmp_path / "labels.parquet"
    path.write_text("subject_id,prediction_time\n1,2100-01-01\n")
    with pytest.raises(InputError, match="not a readable parquet file"):
        read_labels(path)


def test_labels_outside_the_record_or_corpus_are_counted_rejects(corpus, tmp_path) -> None:
    index = corpus.index.filter(pl.col("entity") == "3").row(0, named=True)
    rows = [
        (3, index["first_time"], True),  # at the first event: kept
        (3, index["last_time"], True),  # at the last event: kept
        (3, datetime(2099, 1, 1), True),  # before the record
        (3, datetime(2101, 1, 1), False),  # after it
        (999, datetime(2100, 1, 2), False),  # no such subject
    ]
    matched = match_labels(read_labels(_write(tmp_path / "l.parquet", rows)), corpus)
    assert matched.frame.height == 2
    assert set(matched.frame["split"]) == {index["split"]}
    assert reject_counts(matched.rejects) == {
        "prediction time after the subject's last event": 1,
        "prediction time before the subject's first event": 1,
        "subject not in the corpus": 1,
    }
    assert sorted(matched.rejects["row"].to_list()) == [3, 4, 5]
    assert matched.rows_read == 5


def test_only_binary_labels_are_predicted(corpus, tmp_path) -> None:
    schema = {
        "subject_id": pl.Int64,
        "prediction_time": pl.Datetime("us"),
        "float_value": pl.Float64,
    }
    when = corpus.index.filter(pl.col("entity") == "3")["last_time"][0]
    matched = match_labels(
        read_labels(_write(tmp_path / "f.parquet", [(3, when, 0.5)], schema)), corpus
    )
    with pytest.raises(InputError, match="only binary tasks"):
        binary_targets(matched)
