"""The MEDS shards used as the build's partitions (seqlm.corpus.source_parts): the
corpus equals the one built from hashed partitions and the old builder's; shards that
split a subject, or hold it out of order, still give the same corpus."""

from __future__ import annotations

import polars as pl
import pytest
from helpers.demo_shards import DEMO, assert_same_files, build, hashed, read, small_demo
from helpers.reference_writer import reference_build
from helpers.shared_data import shared_path

import seqlm.corpus.writer as writer
from seqlm.corpora_adapters import get_adapter, meds_layout
from seqlm.corpus import SplitConfig, build_corpus
from seqlm.corpus.sort_stage import source_sample
from seqlm.corpus.source_parts import MAX_PART_BUCKETS, _concat_events, source_groups
from seqlm.vocabularies import TokenScheme
from seqlm.vocabularies.value_bins import ValueSampler


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_as_partitions_equal_hashed_partitions(tmp_path, workers):
    events, scheme = read(small_demo(tmp_path / "meds"))
    assert len(events.source_parts) == 4
    new = build(events, tmp_path / "shards", scheme, workers=workers)
    assert new.manifest["build"]["partitions_from"] == "source"
    assert new.manifest["build"]["partitions"] == 4
    assert new.manifest["build"]["spill_files"] == 0
    assert "partitioning events" not in new.manifest["seconds_per_stage"]
    assert new.manifest["cpu_seconds_per_stage"].keys() == new.manifest["seconds_per_stage"].keys()
    rows = max(rows for rows, _ in events.source_parts)
    old = build_corpus(
        hashed(events), tmp_path / "hashed", scheme, SplitConfig(), rows_per_bucket=rows
    )
    assert old.manifest["build"]["partitions_from"] == "hash"
    assert_same_files(old.path, new.path)
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    assert_same_files(reference, new.path)


def test_shards_splitting_a_subject_fall_back_to_hashing(tmp_path):
    events, scheme = read(small_demo(tmp_path / "meds", split_subjects=True))
    new = build(events, tmp_path / "new", scheme)
    assert new.manifest["build"]["partitions_from"] == "hash"
    # Only the corpus is left beside the data: the abandoned sorted files went with it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meds", "new"]
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    assert_same_files(reference, new.path)


SHARD_VARIANTS = {
    # MEDS allows extra columns, and exports add them per shard (a `source_table` only
    # some ETL stages write).
    "extra column": lambda frame: frame.with_columns(source_table=pl.lit("labevents")),
    # Writers differ in the integer width of subject_id, and some write it as text.
    "Int32 subject_id": lambda frame: frame.with_columns(pl.col("subject_id").cast(pl.Int32)),
    "String subject_id": lambda frame: frame.with_columns(pl.col("subject_id").cast(pl.String)),
}


@pytest.mark.parametrize("variant", SHARD_VARIANTS)
def test_a_shard_unlike_the_others_gives_the_same_corpus(tmp_path, variant):
    """The checks' multi-shard scans must take such shards, whichever is read first."""
    events, scheme = read(small_demo(tmp_path / "plain"))
    expected = build(events, tmp_path / "expected", scheme)
    for number in (0, 1):
        root = small_demo(tmp_path / f"changed{number}")
        shard = root / "data" / "train" / f"{number}.parquet"
        SHARD_VARIANTS[variant](pl.read_parquet(shard)).write_parquet(shard)
        events, scheme = read(root)
        assert_same_files(expected.path, build(events, tmp_path / f"got{number}", scheme).path)


def test_shards_out_of_order_are_sorted(tmp_path):
    """Rows shuffled within their shards (so ties at one time take the new file
    order): the shards are still used, sorted, and give the old builder's corpus."""
    events, scheme = read(small_demo(tmp_path / "meds", shuffle=True))
    new = build(events, tmp_path / "new", scheme)
    assert new.manifest["build"]["partitions_from"] == "source"
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    assert_same_files(reference, new.path)


def test_large_shards_are_cut_between_subjects_and_give_the_same_corpus(tmp_path, monkeypatch):
    """A shard over SHARD_PIECE_ROWS rows is offered in pieces cut where the subject
    changes (each piece whole subjects), used as partitions, and the corpus is the
    old builder's."""
    root = small_demo(tmp_path / "meds")
    whole, scheme = read(root)
    largest = max(rows for rows, _ in whole.source_parts)
    monkeypatch.setattr(meds_layout, "SHARD_PIECE_ROWS", largest // 3)
    events, _ = read(root)
    assert len(events.source_parts) > len(whole.source_parts)
    assert sum(r for r, _ in events.source_parts) == events.rows_read
    assert max(r for r, _ in events.source_parts) <= largest // 3 + 2000  # one subject's run
    new = build_corpus(
        events, tmp_path / "new", scheme, SplitConfig(), rows_per_bucket=largest // 3
    )
    assert new.manifest["build"]["partitions_from"] == "source"
    assert new.manifest["build"]["partitions"] > len(whole.source_parts)
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    assert_same_files(reference, new.path)


def test_shard_pieces_cut_where_the_subject_changes(tmp_path):
    ids = [1] * 3 + [2] * 5 + [3] * 1 + [4] * 2 + [5] * 4  # starts at 0, 3, 8, 9, 11
    path = tmp_path / "0.parquet"
    pl.DataFrame({"subject_id": ids}).write_parquet(path)
    shard = meds_layout.MedsShard(path, "0.parquet", None, len(ids), pl.Schema())
    assert meds_layout.shard_pieces(shard, 100) == [(0, 15)]
    assert meds_layout.shard_pieces(shard, 4) == [(0, 3), (3, 5), (8, 3), (11, 4)]
    assert meds_layout.shard_pieces(shard, 9) == [(0, 9), (9, 6)]
    assert meds_layout.shard_pieces(shard, 2) == [(0, 3), (3, 5), (8, 1), (9, 2), (11, 4)]


def test_source_groups():
    assert source_groups([], 10) is None
    assert source_groups([4, 4, 4, 12, 1], 10) == [[0, 1], [2], [3], [4]]
    assert source_groups([10 * MAX_PART_BUCKETS + 1], 10) is None
    assert source_groups([3, 0, 3], 10) == [[0, 1, 2]]


@pytest.mark.slow
def test_mimic_demo_from_its_shards_equals_the_old_builder(tmp_path):
    events, _ = read(shared_path("clinical", DEMO))
    scheme = TokenScheme(**get_adapter("meds").scheme_defaults)
    new = build_corpus(events, tmp_path / "new", scheme, SplitConfig())
    assert new.manifest["build"]["partitions_from"] == "source"
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    assert_same_files(reference, new.path)


@pytest.mark.parametrize("workers", [1, 2])
def test_train_values_sampled_by_the_sort_stage_give_the_same_corpus(
    tmp_path, monkeypatch, workers
):
    """With the source's own splits (MEDS), the sort stage samples the train values and
    the sampling stage (a read of every sorted file) is skipped; the corpus is the one
    the sampling stage gives, and the old builder's."""
    events, scheme = read(small_demo(tmp_path / "meds"))
    new = build(events, tmp_path / "in_sort", scheme, workers=workers)
    assert "sampling train values" not in new.manifest["seconds_per_stage"]
    assert new.manifest["vocabulary"]["value_binned_codes"] > 0
    monkeypatch.setattr(writer, "_sort_sample_size", lambda *_: 0)
    staged = build(events, tmp_path / "staged", scheme, workers=workers)
    assert "sampling train values" in staged.manifest["seconds_per_stage"]
    assert_same_files(staged.path, new.path)
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    assert_same_files(reference, new.path)


def test_a_sort_stage_sample_is_used_only_where_the_splits_are_the_sources():
    sampler = ValueSampler(8)
    entities = pl.DataFrame(
        {"entity": ["a", "b"], "source_split": ["train", "tuning"], "split": ["train", "tuning"]}
    )
    assert source_sample(sampler, entities) is sampler
    seeded = entities.with_columns(split=pl.Series(["tuning", "tuning"]))
    assert source_sample(sampler, seeded) is None
    unsplit = entities.with_columns(source_split=pl.lit(None, dtype=pl.String))
    assert source_sample(sampler, unsplit) is None
    assert source_sample(None, entities) is None


def test_parts_whose_entities_differ_in_type_are_concatenated_by_name():
    """`source_reads` may give integer subject ids (any width) or names: a group of
    parts that differ in that type is put together as names; one type stays as it is."""
    ints = pl.DataFrame({"entity": [3, 3], "time": [1, 2]})
    narrow = ints.with_columns(pl.col("entity").cast(pl.Int32) + 4)
    names = pl.DataFrame({"entity": ["10"], "time": [5]})
    found = _concat_events([ints, narrow, names])
    assert found["entity"].to_list() == ["3", "3", "7", "7", "10"]
    assert _concat_events([ints, ints])["entity"].dtype == pl.Int64
