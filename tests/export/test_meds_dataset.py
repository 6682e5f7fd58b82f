"""MEDS dataset folders: what write_meds_folder writes passes the `meds` package's schemas
and seqlm's own equivalent checks, each fault is named, and a corpus read back through
`seqlm ingest meds` gives the same tokens."""

from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.cli_helpers import run_seqlm
from helpers.task_data import build_task_corpus, write_task_dataset

from seqlm.corpus import Corpus, load_corpus
from seqlm.export.meds import corpus_to_meds
from seqlm.export.meds_dataset import meds_dataset_problems, write_meds_folder

HAVE_MEDS = importlib.util.find_spec("meds") is not None
needs_meds = pytest.mark.skipif(
    not HAVE_MEDS, reason="the meds package is not installed (pip install 'seqlm[meds-tools]')"
)


@pytest.fixture(scope="module")
def task_corpus(tmp_path_factory) -> Corpus:
    root = write_task_dataset(tmp_path_factory.mktemp("task"), "future", n_subjects=24)
    return load_corpus(build_task_corpus(root))


def _splits(corpus: Corpus) -> dict[int, str]:
    return {int(e): s for e, s in corpus.index.select("entity", "split").iter_rows()}


@pytest.fixture(scope="module")
def written(task_corpus: Corpus, tmp_path_factory) -> Path:
    rows = corpus_to_meds(task_corpus)
    folder = tmp_path_factory.mktemp("export") / "meds"
    return write_meds_folder(rows, folder, _splits(task_corpus), name="task", version="1")


def test_written_folder_has_the_meds_layout(written: Path, task_corpus: Corpus) -> None:
    assert meds_dataset_problems(written) == []
    shards = sorted(str(p.relative_to(written)) for p in written.rglob("*.parquet"))
    assert shards == [
        "data/held_out/0.parquet",
        "data/train/0.parquet",
        "data/tuning/0.parquet",
        "metadata/codes.parquet",
        "metadata/subject_splits.parquet",
    ]
    info = json.loads((written / "metadata" / "dataset.json").read_text())
    assert {"dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version"} <= set(
        info
    )
    assert info["etl_name"] == "seqlm" and datetime.fromisoformat(info["created_at"]).tzinfo
    held_out = pl.read_parquet(written / "data" / "held_out" / "0.parquet", glob=False)
    expected = task_corpus.index.filter(pl.col("split") == "held_out")["entity"].cast(pl.Int64)
    assert sorted(held_out["subject_id"].unique().to_list()) == sorted(expected.to_list())
    codes = pl.read_parquet(written / "metadata" / "codes.parquet", glob=False)
    assert set(codes["code"]) == set(corpus_to_meds(task_corpus)["code"])


@needs_meds
def test_meds_package_accepts_the_written_folder(written: Path) -> None:
    from meds import CodeMetadataSchema, DataSchema, DatasetMetadataSchema, SubjectSplitSchema

    for shard in sorted((written / "data").rglob("*.parquet")):
        DataSchema.validate(pq.read_table(shard))
    CodeMetadataSchema.validate(pq.read_table(written / "metadata" / "codes.parquet"))
    SubjectSplitSchema.validate(pq.read_table(written / "metadata" / "subject_splits.parquet"))
    DatasetMetadataSchema.validate(json.loads((written / "metadata" / "dataset.json").read_text()))


def _rewrite(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


SHARD = "data/train/0.parquet"
FAULTS = {
    "int32 subject ids": (
        SHARD,
        lambda t: _set_column(t, "subject_id", t.column("subject_id").cast(pa.int32())),
        "column subject_id is int32",
    ),
    "MEDS 0.3 text_value": (
        SHARD,
        lambda t: _set_column(t, "text_value", t.column("text_value").cast(pa.string())),
        "column text_value is string",
    ),
    "null code": (
        SHARD,
        lambda t: _set_column(t, "code", pa.array([None] + t.column("code").to_pylist()[1:])),
        "column code has 1 nulls",
    ),
    "times going back": (SHARD, lambda t: t.take(list(range(t.num_rows))[::-1]), "not sorted"),
    "subject split in two": (
        SHARD,
        lambda t: pa.concat_tables([t.slice(0, 3), t.slice(t.num_rows - 2), t.slice(3)]),
        "not contiguous",
    ),
    "split file with extra column": (
        "metadata/subject_splits.parquet",
        lambda t: t.append_column("note", pa.array(["x"] * t.num_rows)),
        "extra columns ['note']",
    ),
    "code missing from codes.parquet": (
        "metadata/codes.parquet",
        lambda t: t.slice(1),
        "codes of the data missing",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_checks_name_each_fault(written: Path, tmp_path: Path, fault: str) -> None:
    broken = Path(shutil.copytree(written, tmp_path / "broken"))
    where, change, message = FAULTS[fault]
    _rewrite(broken / where, change)
    problems = meds_dataset_problems(broken)
    assert any(message in p for p in problems), problems


def test_checks_of_dataset_json_and_shards(written: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(written, tmp_path / "broken"))
    shutil.copy(broken / "data/held_out/0.parquet", broken / "data/train/1.parquet")
    info = broken / "metadata" / "dataset.json"
    info.write_text(json.dumps({"dataset_name": 3, "created_at": "yesterday"}))
    problems = meds_dataset_problems(broken)
    assert any("is in two shards" in p for p in problems), problems
    assert any("dataset_name is not a string" in p for p in problems), problems
    assert any("created_at is not an ISO 8601" in p for p in problems), problems
    info.unlink()
    assert "metadata/dataset.json: missing" in meds_dataset_problems(broken)


@needs_meds
@pytest.mark.parametrize("fault", ["int32 subject ids", "MEDS 0.3 text_value", "null code"])
def test_meds_package_rejects_what_the_checks_reject(written: Path, tmp_path: Path, fault) -> None:
    from flexible_schema.exceptions import SchemaValidationError, TableValidationError
    from meds import DataSchema

    broken = Path(shutil.copytree(written, tmp_path / "broken"))
    where, change, _ = FAULTS[fault]
    _rewrite(broken / where, change)
    assert meds_dataset_problems(broken)
    with pytest.raises((SchemaValidationError, TableValidationError)):
        DataSchema.validate(pq.read_table(broken / where))


def test_corpus_tokens_through_a_meds_folder_and_seqlm_ingest(
    written: Path, task_corpus: Corpus, tmp_path: Path
) -> None:
    result = run_seqlm(
        "ingest", "meds", str(written), "--out", str(tmp_path / "again"),
        "--option", "scheme.min_entities=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = load_corpus(tmp_path / "again")
    before, after = task_corpus.vocabulary, again.vocabulary
    back = {
        int(entity): after.decode(again.sequence(seq_id))
        for seq_id, entity in again.index.select("seq_id", "entity").iter_rows()
    }
    compared = 0
    for seq_id, entity, split in task_corpus.index.select("seq_id", "entity", "split").iter_rows():
        tokens = before.decode(task_corpus.sequence(seq_id))
        if any("[UNK]" in t for t in tokens):
            continue
        assert back[int(entity)] == tokens, seq_id
        assert again.index.filter(pl.col("entity") == entity)["split"].item() == split
        compared += 1
    assert compared == len(task_corpus)
