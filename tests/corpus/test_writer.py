"""build_corpus: files that agree, train-only fitting, buckets, atomic writes, real data."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from helpers.corpus_helpers import clinic_frame, ingested, lesion_frame
from helpers.shared_data import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqlm.corpus.writer as writer
from seqlm.corpora_adapters.base import RejectLog
from seqlm.corpus import SplitConfig, build_corpus
from seqlm.errors import ConfigError, CorpusError, InputError
from seqlm.events import EventTable
from seqlm.vocabularies import TokenScheme, Vocabulary

CLINIC_SCHEME = TokenScheme(
    value_bins=4, min_values_per_bin=2, time_tokens=True, time_gap_edges=("15m", "1h", "1d")
)


@pytest.fixture
def clinic_corpus(tmp_path):
    frame = clinic_frame()
    rejects = RejectLog()
    rejects.add("labs.csv", 7, "no code", column="code")
    rejects.add("labs.csv", 9, "no code", column="code")
    corpus = build_corpus(
        ingested(frame, rejects=rejects), tmp_path / "clinic", CLINIC_SCHEME, SplitConfig(seed=3)
    )
    return frame, corpus


def test_every_sequence_is_the_tokenized_entity(clinic_corpus):
    frame, corpus = clinic_corpus
    vocab = corpus.vocabulary
    expected = vocab.tokenize(EventTable.from_frame(frame)).collect()
    for seq_id, entity in corpus.index.select("seq_id", "entity").iter_rows():
        tokens = expected.filter(pl.col("entity") == entity)
        assert vocab.decode(corpus.sequence(seq_id)) == tokens["token"].to_list()
        assert corpus.sequence_times(seq_id).tolist() == pytest.approx(tokens["time_s"].to_list())


def frame_first_times(frame: pl.DataFrame) -> dict[str, float]:
    return dict(frame.group_by("entity").agg(pl.col("time").min()).iter_rows())


def test_index_offsets_and_lengths_tile_tokens_bin(clinic_corpus):
    _, corpus = clinic_corpus
    index = corpus.index
    assert index["seq_id"].to_list() == list(range(index.height))
    assert index["entity"].to_list() == sorted(index["entity"].to_list())
    offsets, lengths = index["offset"].to_numpy(), index["length"].to_numpy()
    assert offsets[0] == 0
    assert (offsets[1:] == offsets[:-1] + lengths[:-1]).all()
    tokens = np.fromfile(corpus.path / "tokens.bin", dtype=np.uint16)
    assert tokens.size == lengths.sum()
    assert (tokens[offsets] == 1).all() and (tokens[offsets + lengths - 1] == 2).all()
    assert index.schema["first_time"] == pl.Float64
    first = frame_first_times(clinic_corpus[0])
    assert index["first_time"].to_list() == [first[e] for e in index["entity"]]
    assert set(index["group"]) == {"site0", "site1", "site2"}


def test_vocabulary_is_fitted_on_train_rows_only(clinic_corpus):
    frame, corpus = clinic_corpus
    train_entities = corpus.split("train")["entity"]
    train = frame.filter(pl.col("entity").is_in(train_entities.implode()))
    assert Vocabulary.fit(EventTable.from_frame(train), CLINIC_SCHEME) == corpus.vocabulary


def test_held_out_values_do_not_move_bin_edges(tmp_path):
    frame = clinic_frame().with_columns(
        split=pl.when(pl.col("entity") < "subject024")
        .then(pl.lit("train"))
        .otherwise(pl.lit("held_out"))
    )
    shifted = frame.with_columns(
        value=pl.when(pl.col("split") == "held_out")
        .then(pl.col("value") * 100 + 1000)
        .otherwise(pl.col("value")),
        code=pl.when(pl.col("split") == "held_out")
        .then(pl.col("code") + "_only_held_out")
        .otherwise(pl.col("code")),
    )
    a = build_corpus(ingested(frame), tmp_path / "a", CLINIC_SCHEME, SplitConfig())
    b = build_corpus(ingested(shifted), tmp_path / "b", CLINIC_SCHEME, SplitConfig())
    assert a.vocabulary.value_bins and a.vocabulary.value_bins == b.vocabulary.value_bins
    assert a.vocabulary == b.vocabulary
    assert a.manifest["vocabulary"]["hash"] == b.manifest["vocabulary"]["hash"]
    held = b.split("held_out")["seq_id"][0]
    assert "LAB//[UNK]" in b.vocabulary.decode(b.sequence(held))


def test_buckets_do_not_change_the_corpus(tmp_path):
    frame = clinic_frame()
    one = build_corpus(ingested(frame), tmp_path / "one", CLINIC_SCHEME, SplitConfig())
    many = build_corpus(
        ingested(frame), tmp_path / "many", CLINIC_SCHEME, SplitConfig(), rows_per_bucket=7
    )
    for name in ("tokens.bin", "times.bin", "tokenizer.json", "scheme.json"):
        assert (one.path / name).read_bytes() == (many.path / name).read_bytes(), name
    assert one.index.equals(many.index)


def test_manifest_counts_and_privacy(clinic_corpus):
    frame, corpus = clinic_corpus
    manifest = corpus.manifest
    counts = manifest["counts"]
    assert counts["rows_read"] == frame.height + 2
    assert counts["events"] == frame.height and counts["rejects"] == 2
    assert counts["sequences"] == 30
    assert sum(counts["sequences_per_split"].values()) == 30
    assert counts["tokens"] == corpus.tokens.size == sum(counts["tokens_per_split"].values())
    tokenizer = (corpus.path / "tokenizer.json").read_bytes()
    assert manifest["vocabulary"]["hash"] == hashlib.sha256(tokenizer).hexdigest()
    assert manifest["token_dtype"] == "uint16"
    assert manifest["times"] is True
    assert manifest["source"] == {"adapter": "test", "settings": {"source": "unit test"}}
    assert manifest["scheme"]["time_gap_edges"] == ["15m", "1h", "1d"]
    text = (corpus.path / "manifest.json").read_text()
    assert "subject0" not in text
    rejects = pl.read_parquet(corpus.path / "rejects.parquet")
    assert rejects["row"].to_list() == [7, 9]


def test_large_vocabulary_uses_uint32(tmp_path):
    frame = pl.DataFrame(
        {"entity": [f"e{i % 50}" for i in range(70_000)], "code": [f"c{i}" for i in range(70_000)]}
    )
    splits = SplitConfig(tuning=0.0, held_out=0.0)
    corpus = build_corpus(ingested(frame), tmp_path / "big", TokenScheme(), splits)
    assert corpus.vocab_size > 65_535
    assert corpus.manifest["token_dtype"] == "uint32"
    assert corpus.tokens.dtype == np.uint32
    assert (corpus.path / "tokens.bin").stat().st_size == 4 * (70_000 + 2 * 50)
    assert corpus.vocabulary.decode(corpus.sequence(0))[1] == "c0"


def test_datetime_times_and_entity_attributes(tmp_path):
    start = datetime(2150, 3, 1)
    frame = pl.DataFrame(
        {
            "entity": ["a", "a", "a", "b"],
            "time": [None, start, start + timedelta(minutes=90), start],
            "code": ["S", "X", "Y", "X"],
            "condition": ["pre", "pre", "pre", "post"],
        }
    )
    scheme = TokenScheme(time_tokens=True, time_gap_edges=("1h",))
    splits = SplitConfig(tuning=0.0, held_out=0.0)
    corpus = build_corpus(ingested(frame, ("condition",)), tmp_path / "c", scheme, splits)
    index = corpus.index
    assert index["first_time"].to_list() == [start, start]
    assert index["last_time"].to_list() == [start + timedelta(minutes=90), start]
    assert index["condition"].to_list() == ["pre", "post"]
    assert corpus.vocabulary.decode(corpus.sequence(0)) == [
        "[BOS]",
        "S",
        "X",
        "[TIME//1h]",
        "Y",
        "[EOS]",
    ]
    assert corpus.sequence_times(0).tolist() == [0, 0, 0, 5400, 5400, 5400]


def test_no_times_bin_without_times(tmp_path):
    frame = pl.DataFrame({"entity": ["a", "b"], "code": ["x", "y"]})
    corpus = build_corpus(ingested(frame), tmp_path / "c", TokenScheme(), SplitConfig())
    assert corpus.times is None and not (corpus.path / "times.bin").exists()


def test_rows_read_must_add_up(tmp_path):
    frame = pl.DataFrame({"entity": ["a"], "code": ["x"]})
    with pytest.raises(CorpusError, match="rows read must equal"):
        build_corpus(ingested(frame, rows_read=5), tmp_path / "c", TokenScheme(), SplitConfig())
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("column", ["split", "group"])
def test_entity_level_columns_must_be_constant(tmp_path, column):
    values = {"split": ["train", "held_out"], "group": ["g1", "g2"]}[column]
    frame = pl.DataFrame({"entity": ["a", "a"], "code": ["x", "y"], column: values})
    with pytest.raises(InputError, match="more than one") as err:
        build_corpus(ingested(frame), tmp_path / "c", TokenScheme(), SplitConfig())
    assert err.value.column == column


def test_existing_folder_needs_overwrite(tmp_path):
    frame = pl.DataFrame({"entity": ["a"], "code": ["x"]})
    out = tmp_path / "c"
    build_corpus(ingested(frame), out, TokenScheme(), SplitConfig())
    with pytest.raises(ConfigError, match="overwrite"):
        build_corpus(ingested(frame), out, TokenScheme(), SplitConfig())
    other = pl.DataFrame({"entity": ["a"], "code": ["y"]})
    corpus = build_corpus(ingested(other), out, TokenScheme(), SplitConfig(), overwrite=True)
    assert "y" in corpus.vocabulary.tokens and "x" not in corpus.vocabulary.tokens
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_a_failure_midway_leaves_no_corpus_and_keeps_the_old_one(tmp_path, monkeypatch):
    frame = clinic_frame(5)
    out = tmp_path / "c"

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "_index_frame", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_corpus(ingested(frame), out, TokenScheme(), SplitConfig())
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    old = build_corpus(ingested(frame), out, TokenScheme(), SplitConfig())
    before = {p.name: p.read_bytes() for p in old.path.iterdir()}
    monkeypatch.setattr(writer, "_index_frame", fail)
    with pytest.raises(RuntimeError):
        build_corpus(ingested(frame), out, TokenScheme(), SplitConfig(seed=9), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_lesion_strings_corpus_holds_out_a_whole_bird(tmp_path):
    folder = shared_path("birdsong", "koparkar2024_mman_lesions")
    frame = lesion_frame(folder)
    splits = SplitConfig(held_out_groups=("bird7",), held_out=0.0, tuning=0.1, by="group")
    corpus = build_corpus(
        ingested(frame, ("condition",)), tmp_path / "finch", TokenScheme(), splits
    )
    index = corpus.index
    assert index.group_by("group").agg(pl.col("split").n_unique())["split"].max() == 1
    assert set(index.filter(pl.col("group") == "bird7")["split"]) == {"held_out"}
    assert set(index.filter(pl.col("group") != "bird7")["split"]) == {"train", "tuning"}
    texts = [p.read_text().strip() for p in folder.glob("bird*_*lesion")]
    # every symbol is an event, but for the bout marker `Y` that ends most files
    n_syllables = sum(len(t) - t.endswith("Y") for t in texts)
    assert corpus.manifest["counts"]["events"] == n_syllables
    assert corpus.tokens.size == n_syllables + 2 * index.height
    assert set(index["condition"]) == {"prelesion", "postlesion"}
    # syllable labels are the tokens; labels never sung by a training bird are unknowns
    train_labels = set(frame.filter(pl.col("group").is_in(["bird7"]).not_())["code"])
    vocab = corpus.vocabulary
    assert {t for t in vocab.tokens if len(t) == 1} <= train_labels
    first = index.row(0, named=True)
    bout = frame.filter(pl.col("entity") == first["entity"])["code"].to_list()
    assert vocab.decode(corpus.sequence(0))[1:-1] == [
        c if c in vocab.tokens else "syllable//[UNK]" for c in bout
    ]
    assert json.loads((corpus.path / "manifest.json").read_text())["attributes"] == ["condition"]


@pytest.mark.slow
def test_mimic_demo_corpus_uses_the_meds_splits(tmp_path):
    root = shared_path("clinical", "mimic-iv-demo-meds", "data")
    frames = [
        pl.read_parquet(root / split / "0.parquet").select(
            pl.col("subject_id").cast(pl.String).alias("entity"),
            "time",
            "code",
            pl.col("numeric_value").alias("value"),
            pl.col("code").str.split("//").list.first().alias("kind"),
            pl.lit(split).alias("split"),
        )
        for split in ("train", "tuning", "held_out")
    ]
    frame = pl.concat(frames)
    scheme = TokenScheme(min_entities=5, time_tokens=True)
    corpus = build_corpus(ingested(frame), tmp_path / "mimic", scheme, SplitConfig())
    counts = corpus.manifest["counts"]
    assert counts["events"] == 916_166
    assert counts["sequences_per_split"] == {"train": 80, "tuning": 10, "held_out": 10}
    assert corpus.vocabulary.token_info("LAB//[UNK]").kind == "LAB"
    assert len(corpus.vocabulary.value_bins) > 100


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
            st.sampled_from(["x", "y", "z", "w v"]),
            st.one_of(st.none(), st.floats(min_value=-5, max_value=5)),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=1, max_value=12),
)
def test_any_table_builds_the_same_corpus_in_any_bucket_size(tmp_path_factory, rows, bucket):
    frame = pl.DataFrame(rows, schema=["entity", "time", "code", "value"], orient="row")
    scheme = TokenScheme(
        value_bins=3, min_values_per_bin=1, time_tokens=True, time_gap_edges=("1s", "1h")
    )
    folder = tmp_path_factory.mktemp("buckets")
    whole = build_corpus(ingested(frame), folder / "whole", scheme, SplitConfig(seed=1))
    parts = build_corpus(
        ingested(frame), folder / "parts", scheme, SplitConfig(seed=1), rows_per_bucket=bucket
    )
    assert whole.index.equals(parts.index)
    assert np.array_equal(whole.tokens, parts.tokens)
    assert (whole.times is None) == (parts.times is None) == frame["time"].is_null().all()
    if whole.times is not None:
        assert np.array_equal(whole.times, parts.times)
    assert int(whole.index["length"].sum()) == whole.tokens.size
    n_events = frame.group_by("entity").len()
    lengths = dict(whole.index.select("entity", "length").iter_rows())
    for entity, n in n_events.iter_rows():
        assert lengths[entity] >= n + 2


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.randoms(), st.booleans())
def test_gather_copies_sequences_in_order_by_slices_or_by_index(
    tmp_path, monkeypatch, lengths, random, slices
):
    """The ordering stage's copy, slice by slice (long sequences) or through an index
    array (short ones), small steps included: each sequence's items in the new order,
    and the checksum record of the file written."""
    monkeypatch.setattr(writer, "ORDER_CHUNK_TOKENS", 50)
    monkeypatch.setattr(writer, "SLICE_COPY_LENGTH", 1 if slices else 10**9)
    lengths = np.array(lengths, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    items = np.arange(int(lengths.sum()), dtype=np.uint16)
    spill = tmp_path / f"spill-{random.random()}"
    items.tofile(spill)
    order = list(range(len(lengths)))
    random.shuffle(order)
    target = tmp_path / "tokens.bin"
    record = writer._gather(
        spill, target, np.dtype(np.uint16), starts[order], lengths[order], False
    )
    expected = np.concatenate([items[starts[i] : starts[i] + lengths[i]] for i in order])
    assert target.read_bytes() == expected.tobytes()
    assert record["tokens.bin"]["sha256"] == hashlib.sha256(expected.tobytes()).hexdigest()
