"""Trajectory export: corpus tokens -> MEDS rows -> tokens, exactly."""

from __future__ import annotations

import random
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.meds_data import meds_frame, write_meds
from helpers.shared_data import shared_path

from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions
from seqlm.corpus import Corpus
from seqlm.errors import InputError
from seqlm.export.meds import (
    MEDS_ROW_SCHEMA,
    corpus_to_meds,
    float32_inside,
    meds_rows_to_tokens,
    time_token_microseconds,
    tokens_to_meds,
    write_meds_dataset,
)
from seqlm.ingest import ingest

GAPS_MINUTES = [0, 0, 2, 7, 45, 90, 200, 600, 1500, 4000, 20000, 60000, 300000, 700000]


def build(root: Path, out: Path, **scheme) -> Corpus:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        return ingest(
            "meds", [root], out, {"scheme": {"min_entities": 1, "min_values_per_bin": 2, **scheme}}
        )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Eight subjects with labs (values), gaps from none to over a year, demographics."""
    rng = random.Random(7)
    rows = []
    for subject in range(1, 9):
        rows.append((subject, None, f"GENDER//{'FM'[subject % 2]}", None, None))
        rows.append((subject, datetime(1950 + 3 * subject, 6, 1), "MEDS_BIRTH", None, None))
        now = datetime(2100, 1, 1)
        for minutes in rng.sample(GAPS_MINUTES, len(GAPS_MINUTES)):
            now += timedelta(minutes=minutes)
            code = rng.choice(["LAB//A//mg", "LAB//B", "DIAGNOSIS//X", "LAB//A//mg"])
            value = round(rng.uniform(0, 100), 1) if code.startswith("LAB") else None
            text = rng.choice([None, "NEG", "POS"]) if code == "LAB//B" else None
            rows.append((subject, now, code, value, text))
        rows.append((subject, now + timedelta(days=3), "MEDS_DEATH", None, None))
    split = {s: "train" if s <= 6 else "held_out" for s in range(1, 9)}
    frame = meds_frame(rows)
    shards = {
        "train/0.parquet": frame.filter(pl.col("subject_id") <= 6),
        "held_out/0.parquet": frame.filter(pl.col("subject_id") > 6),
    }
    return write_meds(tmp_path_factory.mktemp("meds"), shards, splits=split)


def assert_round_trip(corpus: Corpus, seq_ids=None) -> None:
    seq_ids = range(len(corpus)) if seq_ids is None else seq_ids
    rows = corpus_to_meds(corpus, seq_ids)
    back = meds_rows_to_tokens(rows, corpus.vocabulary)
    for seq_id in seq_ids:
        entity = int(corpus.index["entity"][seq_id])
        assert back[entity] == corpus.vocabulary.decode(corpus.sequence(seq_id)), seq_id


@pytest.mark.parametrize(
    "scheme",
    [
        {},
        {"value_mode": "separate", "use_text": True},
        {"time_tokens": False},
        {"value_bins": 3, "time_gap_edges": ["1h", "1d", "30d"]},
    ],
    ids=["fused", "separate+text", "no-time", "coarse"],
)
def test_round_trip_is_exact(synthetic: Path, tmp_path: Path, scheme):
    corpus = build(synthetic, tmp_path / "corpus", **scheme)
    assert corpus.vocabulary.value_bins  # values are binned, so centres are exercised
    assert_round_trip(corpus)


def test_exported_rows_are_meds_with_bin_centres_and_rebuilt_times(synthetic: Path, tmp_path: Path):
    corpus = build(synthetic, tmp_path / "corpus")
    vocab = corpus.vocabulary
    rows = corpus_to_meds(corpus, [0])
    assert rows.schema == pl.Schema(MEDS_ROW_SCHEMA)
    assert rows["subject_id"].unique().to_list() == [int(corpus.index["entity"][0])]
    assert rows["code"][0].startswith("GENDER//") and rows["time"][0] is None
    assert rows["code"][1] == "MEDS_BIRTH"
    timed = rows.drop_nulls("time")
    # MEDS order: times never go back; the first event is at the corpus's first time.
    assert timed["time"].is_sorted()
    assert timed["time"][1] == corpus.index["first_time"][0]
    # Values are the bins' centres (as float32) and fall in their bins.
    tokens = [t for t in vocab.decode(corpus.sequence(0)) if "//Q" in t and "AGE" not in t]
    valued = rows.drop_nulls("numeric_value")
    assert valued.height == len(tokens)
    pairs = valued.select("code", "numeric_value").iter_rows()
    for token, (code, value) in zip(tokens, pairs, strict=True):
        info = vocab.token_info(token)
        assert code == info.code
        assert value == pytest.approx(info.bin_centre, rel=1e-6)
        assert info.bin_range[0] <= value < info.bin_range[1]


def test_time_tokens_add_interval_centres_and_exact_repeats(synthetic: Path, tmp_path: Path):
    corpus = build(synthetic, tmp_path / "corpus", time_gap_edges=["1h", "1d", "30d"])
    added = time_token_microseconds(corpus.vocabulary)
    hour, day = 3_600_000_000, 86_400_000_000
    assert added == {"[TIME//1h]": 12 * hour + hour // 2, "[TIME//1d]": 15 * day + day // 2,
                     "[TIME//30d]": 30 * day, "[TIME//long]": 11 * 30 * day}  # fmt: skip
    tokens = ["[BOS]", "GENDER//F", "DIAGNOSIS//X", "[TIME//30d]", "[TIME//30d]", "[TIME//1h]",
              "DIAGNOSIS//X", "[EOS]", "DIAGNOSIS//X"]  # fmt: skip
    rows = tokens_to_meds(tokens, corpus.vocabulary, subject_id=5, start=datetime(2100, 1, 1))
    assert rows["code"].to_list() == ["GENDER//F", "DIAGNOSIS//X", "DIAGNOSIS//X"]  # to [EOS]
    assert rows["time"].to_list() == [
        None,
        datetime(2100, 1, 1),
        datetime(2100, 1, 1) + timedelta(days=60, hours=12, minutes=30),
    ]


def test_generated_tokens_with_unknowns_and_stray_values(synthetic: Path, tmp_path: Path):
    corpus = build(synthetic, tmp_path / "corpus", value_mode="separate")
    vocab = corpus.vocabulary
    tokens = ["VALUE//Q2", "LAB//[UNK]", "[UNK]", "DIAGNOSIS//X", "VALUE//Q1", "LAB//A//mg",
              "VALUE//Q2", "not-a-token"]  # fmt: skip
    rows = tokens_to_meds(tokens, vocab)
    assert rows["code"].to_list() == ["LAB//[UNK]", "[UNK]", "DIAGNOSIS//X", "LAB//A//mg", "[UNK]"]
    values = rows["numeric_value"].to_list()
    assert values[:3] == [None, None, None]  # VALUE tokens with no binned code: dropped
    assert values[3] == pytest.approx(vocab.value_bins["LAB//A//mg"].centres[1], rel=1e-6)
    ids = vocab.encode(tokens)
    assert tokens_to_meds(ids, vocab).equals(rows)
    with pytest.raises(InputError, match="outside"):
        tokens_to_meds(np.array([len(vocab)]), vocab)


def test_subject_ids_from_entity_or_seq_id(tmp_path: Path):
    rows = [("abc", datetime(2100, 1, 1), "LAB//A", None, None)]
    schema = {"subject_id": pl.String, "time": pl.Datetime("us"), "code": pl.String,
              "numeric_value": pl.Float32, "text_value": pl.String}  # fmt: skip
    root = write_meds(tmp_path / "m", {"train/0.parquet": meds_frame(rows, schema)})
    corpus = build(root, tmp_path / "corpus")
    with pytest.raises(InputError, match="not an integer subject id"):
        corpus_to_meds(corpus)
    assert corpus_to_meds(corpus, subject_ids="seq_id")["subject_id"].to_list() == [0]


def test_float32_inside_keeps_values_in_their_bin():
    low = float(np.float32(0.1)) + 1e-12  # just above a float32 value
    value = float32_inside(low, low, 0.2)
    assert low <= value < 0.2 and np.float32(value) == value
    assert float32_inside(5.0, 1.0, 9.0) == 5.0


def test_written_dataset_reads_back(synthetic: Path, tmp_path: Path):
    corpus = build(synthetic, tmp_path / "corpus")
    rows = corpus_to_meds(corpus)
    root = write_meds_dataset(rows, tmp_path / "export")
    shard = pl.read_parquet(root / "data" / "held_out" / "0.parquet")
    assert shard.schema == pl.Schema(MEDS_ROW_SCHEMA)
    assert shard.height == rows.height
    back = meds_rows_to_tokens(rows, corpus.vocabulary, MedsOptions())
    assert len(back) == len(corpus)


@pytest.fixture(scope="module")
def mimic_corpus(tmp_path_factory) -> Corpus:
    root = shared_path("clinical", "mimic-iv-demo-meds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        return ingest("meds", [root], tmp_path_factory.mktemp("mimic") / "corpus")


def test_mimic_round_trip_on_evaluation_subjects(mimic_corpus: Corpus):
    evaluation = mimic_corpus.index.filter(pl.col("split") != "train")["seq_id"].to_list()
    assert len(evaluation) == 20
    assert_round_trip(mimic_corpus, evaluation)


@pytest.mark.slow
def test_mimic_round_trip_on_every_subject(mimic_corpus: Corpus):
    assert_round_trip(mimic_corpus)
