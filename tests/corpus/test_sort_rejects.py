"""The rejects read by the sort stage with the events (`Ingested.source_reads`): the
same rejects file and corpus as the separate pass over the source, and no such pass."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import polars as pl
import pytest
from helpers.demo_shards import assert_same_files, build, read, small_demo

from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.base import RejectLog
from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions
from seqlm.corpora_adapters.meds_shard import categorical_codes
from seqlm.corpus import SplitConfig, build_corpus


def with_rejects(root: Path) -> Path:
    """`small_demo` with some rows of every shard made rejects: null codes, times past
    latest_time and a second MEDS_BIRTH."""
    for shard in sorted((root / "data").rglob("*.parquet")):
        frame = pl.read_parquet(shard)
        row = pl.int_range(pl.len())
        frame = frame.with_columns(
            code=pl.when(row % 97 == 5).then(None).otherwise(pl.col("code")),
            time=pl.when(row % 89 == 7)
            .then(pl.datetime(2500, 1, 1, time_unit=frame.schema["time"].time_unit))
            .otherwise(pl.col("time")),
        )
        births = frame.filter(pl.col("code") == "MEDS_BIRTH").head(1)
        frame = pl.concat([frame.head(20), births, frame.slice(20)])
        frame.write_parquet(shard)
    return root


def unfolded(events):
    """The same events without `source_reads`: the rejects are read in their own pass."""
    return dataclasses.replace(events, source_reads=())


@pytest.mark.parametrize("workers", [1, 2])
def test_rejects_read_by_the_sort_stage_equal_their_own_pass(tmp_path, monkeypatch, workers):
    events, scheme = read(with_rejects(small_demo(tmp_path / "meds")))
    assert len(events.source_reads) == len(events.source_parts) == 4
    old = build(unfolded(events), tmp_path / "own_pass", scheme, workers=workers)
    assert "reading rejects" in old.manifest["seconds_per_stage"]

    def no_pass(self):
        raise AssertionError("the rejects were read in a pass of their own")

    monkeypatch.setattr(RejectLog, "to_frame", no_pass)
    new = build(events, tmp_path / "folded", scheme, workers=workers)
    assert "reading rejects" not in new.manifest["seconds_per_stage"]
    rejects = pl.read_parquet(new.path / "rejects.parquet")
    assert set(rejects["reason"]) == {
        "null code",
        "time outside plausible range",
        "duplicate MEDS_BIRTH",
    }
    assert new.manifest["counts"]["rows_read"] == events.rows_read
    assert_same_files(old.path, new.path)
    assert (old.path / "rejects.parquet").read_bytes() == rejects_bytes(new.path)


def rejects_bytes(folder: Path) -> bytes:
    return (folder / "rejects.parquet").read_bytes()


def test_rejects_read_by_the_sort_stage_survive_the_fall_back_to_hashing(tmp_path):
    """Shards that split a subject: the sort of the shards is abandoned for hashed
    partitions, and the rejects it read are the ones kept."""
    root = with_rejects(small_demo(tmp_path / "meds", split_subjects=True))
    events, scheme = read(root)
    new = build(events, tmp_path / "folded", scheme)
    assert new.manifest["build"]["partitions_from"] == "hash"
    old = build(unfolded(events), tmp_path / "own_pass", scheme)
    assert_same_files(old.path, new.path)
    assert rejects_bytes(old.path) == rejects_bytes(new.path)
    assert pl.read_parquet(new.path / "rejects.parquet").height > 0


def test_shards_of_different_schemas_have_their_rejects_read_apart(tmp_path):
    """Shards that differ in schema are read by the whole dataset's scan group by group,
    not in shard order, so the adapter offers no `source_reads` and the build reads the
    rejects in their own pass."""
    root = with_rejects(small_demo(tmp_path / "meds"))
    shard = root / "data" / "tuning" / "0.parquet"
    frame = pl.read_parquet(shard)
    frame.with_columns(pl.col("numeric_value").cast(pl.Float64)).write_parquet(shard)
    events, scheme = read(root)
    assert events.source_parts and not events.source_reads
    corpus = build_corpus(events, tmp_path / "corpus", scheme, SplitConfig())
    assert "reading rejects" in corpus.manifest["seconds_per_stage"]
    assert pl.read_parquet(corpus.path / "rejects.parquet").height == len(events.rejects)


def test_read_shard_gives_the_part_events_and_its_rejects(tmp_path):
    events, _ = read(with_rejects(small_demo(tmp_path / "meds")))
    found = [function() for function in events.source_reads]
    for (_, part), (part_events, _) in zip(events.source_parts, found, strict=True):
        # Integer subject ids stay integers (`meds_shard.event_frame`): named per run.
        assert part_events.schema["entity"] == pl.Int64
        named = part_events.with_columns(pl.col("entity").cast(pl.String))
        assert named.equals(part.collect())
    rejects = pl.concat([part_rejects for _, part_rejects in found])
    assert rejects.equals(events.rejects.to_frame())


def test_read_shard_ages_equal_the_lazy_plan_on_shuffled_rows(tmp_path):
    """`read_shard` puts each subject's first time on its birth rows only (not a join onto
    every row) and works out codes and kinds once per distinct code: the same events as
    the lazy per-shard plan, with rows out of subject order and a subject whose only row
    is its birth (no age: no timed event)."""
    root = with_rejects(small_demo(tmp_path / "meds"))
    shard = sorted((root / "data").rglob("*.parquet"))[0]
    frame = pl.read_parquet(shard).sample(fraction=1.0, shuffle=True, seed=3)
    lone = frame.filter(pl.col("code") == "MEDS_BIRTH").head(1)
    lone = lone.with_columns(
        pl.lit(999_999_999, dtype=frame.schema["subject_id"]).alias("subject_id")
    )
    pl.concat([frame, lone]).write_parquet(shard)
    events, _ = read(root)
    ages = 0
    for (_, part), function in zip(events.source_parts, events.source_reads, strict=True):
        found = function()[0]
        # Codes and kinds as categoricals (`meds_shard.categorical_codes`), else equal.
        assert found.schema["code"] == found.schema["kind"] == pl.Categorical
        as_strings = found.with_columns(pl.col("entity", "code", "kind").cast(pl.String))
        assert as_strings.equals(part.collect()) and as_strings.schema == part.collect_schema()
        ages += found.filter(pl.col("code") == "AGE")["value"].is_not_null().sum()
    assert ages > 0


def test_categorical_codes_work_per_distinct_code_and_keep_nulls():
    events = pl.DataFrame({"code": ["A//1", None, "B", "A//1", "MEDS_BIRTH", None, "B//x//y"]})
    found = categorical_codes(
        events.with_columns(kind=pl.col("code")),
        lambda code: pl.when(code == "MEDS_BIRTH").then(pl.lit("AGE")).otherwise(code),
        lambda code: code.str.splitn("//", 2).struct.field("field_0"),
    )
    assert found["code"].dtype == found["kind"].dtype == pl.Categorical
    assert found["code"].cast(pl.String).to_list() == [
        "A//1",
        None,
        "B",
        "A//1",
        "AGE",
        None,
        "B//x//y",
    ]
    assert found["kind"].cast(pl.String).to_list() == ["A", None, "B", "A", "AGE", None, "B"]


@pytest.mark.parametrize(
    "options",
    [{}, {"drop_prefixes": ["LAB"]}, {"keep_prefixes": ["LAB", "MEDS_BIRTH"]}],
    ids=["categorical codes", "drop prefix", "keep prefix"],
)
def test_read_shard_equals_the_lazy_plan_with_and_without_prefix_filters(tmp_path, options):
    """`read_shard` reads the raw code as a categorical unless a prefix filter needs its
    strings (`meds_shard.raw_categories`): events and rejects as the lazy plans give
    them either way (null codes, duplicate births and late rows among them)."""
    root = with_rejects(small_demo(tmp_path / "meds"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        events = get_adapter("meds").read([root], MedsOptions(**options))
    found = [function() for function in events.source_reads]
    for (_, part), (part_events, _) in zip(events.source_parts, found, strict=True):
        as_strings = part_events.with_columns(pl.col("entity", "code", "kind").cast(pl.String))
        assert as_strings.equals(part.collect())
    rejects = pl.concat([part_rejects for _, part_rejects in found])
    assert rejects.equals(events.rejects.to_frame())
    assert rejects["reason"].n_unique() >= (3 if options else 2)
