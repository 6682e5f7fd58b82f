"""`build_corpus(..., within_time_order=)`: the events of one timestamp in the source's
order (the default, byte for byte the corpus from before the option) or in code order
(canonical: the same tokens whatever order the file had), at any worker count, with the
same rows, times, index and vocabulary."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.corpus_helpers import ingested
from helpers.reference_writer import reference_build
from helpers.shared_data import shared_path

from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions
from seqlm.corpus import SplitConfig, build_corpus
from seqlm.corpus.within_time_order import corpus_within_time_order, in_code_order
from seqlm.errors import ConfigError
from seqlm.vocabularies import TokenScheme

SAME = ("times.bin", "index.parquet", "tokenizer.json", "scheme.json", "rejects.parquet")
SCHEME = TokenScheme(
    value_bins=2, min_values_per_bin=1, time_tokens=True, time_gap_edges=("1h", "1d")
)
# The MIMIC-IV demo built by main at 0c05ab6 (before the option), `seqlm ingest meds`.
DEMO_SHA256 = {
    "tokens.bin": "9088b6d66ec35413ef6a87b8d16771b2d333420c3e1830a51763a8f904fa6da4",
    "times.bin": "1d9bec6e663b7e0b122934d0f75af5a46b4dd8b0d023362c1b0e048f189b6056",
}


PANEL_STATIC = {"SEX//F", "SEX//M"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def panel_frame(seed: int | None = None) -> pl.DataFrame:
    """Twelve subjects; each has a static row and timestamps of 1-5 events (a panel of
    labs with values, a repeated code, a text), the rows of a timestamp in a scrambled
    order; `seed`: every row shuffled again (another file order of the same events)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(12):
        subject = f"s{s:02d}"
        rows.append((subject, None, "SEX", f"SEX//{'FM'[s % 2]}", None, None))
        for hour in range(6):
            codes = rng.choice(["LAB//b", "LAB//a", "DX//x", "LAB//c", "LAB//a"], 1 + hour % 5)
            for code in codes:
                value = float(rng.integers(0, 9)) if code.startswith("LAB") else None
                text = "pos" if code == "DX//x" and rng.random() < 0.5 else None
                rows.append((subject, 3600.0 * hour, code.split("//")[0], code, value, text))
    frame = pl.DataFrame(
        rows,
        schema=["entity", "time", "kind", "code", "value", "text"],
        orient="row",
    )
    if seed is not None:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    return frame


def build(frame: pl.DataFrame, out: Path, **kwargs):
    return build_corpus(ingested(frame), out, SCHEME, SplitConfig(seed=1), **kwargs)


def sorted_share(corpus, static: set[str]) -> float:
    """The share of timestamps with several events (as times.bin has them, float32)
    whose codes are in sorted order; `static` codes (rows without a time, which times.bin
    puts at the first time) left out."""
    vocab = corpus.vocabulary
    codes = [vocab.token_info(t).code if t in vocab.data_tokens else None for t in vocab.tokens]
    lengths = corpus.index["length"].to_numpy()
    frame = pl.DataFrame(
        {
            "seq": np.repeat(np.arange(len(lengths)), lengths),
            "time": np.asarray(corpus.times),
            "code": pl.Series(codes, dtype=pl.String).gather(np.asarray(corpus.tokens)),
        }
    ).filter(pl.col("code").is_not_null() & ~pl.col("code").is_in(sorted(static)))
    runs = frame.group_by("seq", "time", maintain_order=True).agg("code")
    runs = runs.filter(pl.col("code").list.len() > 1)
    return float((runs["code"] == runs["code"].list.sort()).mean())


def test_code_order_sorts_each_timestamp_by_code_value_text_and_keeps_the_rest():
    rows = pl.DataFrame(
        {
            "entity": ["a", "a", "a", "a", "a", "a", "b", "b"],
            "time": [None, None, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0],
            "order": [0, 1, 2, 3, 4, 5, 0, 1],
            "kind": ["S", "S", "L", "L", "L", "L", "L", "L"],
            "code": ["Z", "A", "L2", "L1", "L1", "B", "Y", "X"],
            "value": [None, None, 5.0, 3.0, None, None, None, None],
            "text": [None, None, None, None, None, None, "t", None],
        }
    )
    ordered = in_code_order(rows)
    # Untimed rows keep their place; a time's rows sort by code, then value (null
    # first); entities and times stay where they were.
    assert ordered["order"].to_list() == [0, 1, 4, 3, 2, 5, 1, 0]
    assert ordered["code"].to_list() == ["Z", "A", "L1", "L1", "L2", "B", "X", "Y"]
    assert ordered.height == rows.height
    assert ordered.sort("entity", "order").equals(rows.sort("entity", "order"))


def test_default_is_byte_identical_to_the_builder_before_the_option(tmp_path):
    frame = panel_frame()
    old = reference_build(ingested(frame), tmp_path / "old", SCHEME, SplitConfig(seed=1), 50)
    new = build(frame, tmp_path / "new", rows_per_bucket=50)
    for name in ("tokens.bin", *SAME[:-1]):  # the old builder wrote no rejects file
        assert (old / name).read_bytes() == (new.path / name).read_bytes(), name
    assert new.manifest["within_time_order"] == "file"


def test_code_order_is_one_corpus_whatever_the_file_order(tmp_path):
    built = {}
    for seed in (None, 1, 2):
        for order in ("file", "code"):
            out = tmp_path / f"{order}-{seed}"
            built[order, seed] = build(panel_frame(seed), out, within_time_order=order)
    # The file order shows in the default corpus...
    assert sha256(built["file", None].path / "tokens.bin") != sha256(
        built["file", 1].path / "tokens.bin"
    )
    # ...not in the code-ordered one: the same bytes from every file order.
    for seed in (1, 2):
        for name in ("tokens.bin", *SAME):
            a, b = built["code", None].path / name, built["code", seed].path / name
            assert a.read_bytes() == b.read_bytes(), name
    code, file = built["code", None], built["file", None]
    assert code.manifest["within_time_order"] == "code"
    assert sorted_share(code, PANEL_STATIC) == 1.0
    assert sorted_share(file, PANEL_STATIC) < 0.5


def test_code_order_moves_ids_only_within_a_timestamp(tmp_path):
    frame = panel_frame()
    file = build(frame, tmp_path / "file")
    code = build(frame, tmp_path / "code", within_time_order="code")
    for name in SAME:
        assert (file.path / name).read_bytes() == (code.path / name).read_bytes(), name
    assert file.manifest["counts"] == code.manifest["counts"]
    assert file.manifest["values"] == code.manifest["values"]
    times = np.asarray(file.times)
    a, b = np.asarray(file.tokens), np.asarray(code.tokens)
    assert not np.array_equal(a, b)
    # Each (sequence, time) run holds the same multiset of ids in both.
    keys = np.repeat(np.arange(file.index.height), file.index["length"].to_numpy())
    for frame_ids in (a, b):
        assert len(frame_ids) == len(keys)
    sort_a = np.lexsort((a, times, keys))
    sort_b = np.lexsort((b, times, keys))
    assert np.array_equal(a[sort_a], b[sort_b])


@pytest.mark.parametrize("rows_per_bucket", [40, 500_000])
def test_code_order_is_the_same_with_two_workers(tmp_path, rows_per_bucket):
    frame = panel_frame()
    one = build(
        frame,
        tmp_path / "one",
        within_time_order="code",
        workers=1,
        rows_per_bucket=rows_per_bucket,
    )
    two = build(
        frame,
        tmp_path / "two",
        within_time_order="code",
        workers=2,
        rows_per_bucket=rows_per_bucket,
    )
    for name in ("tokens.bin", *SAME):
        assert (one.path / name).read_bytes() == (two.path / name).read_bytes(), name


def test_an_unknown_order_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file, code"):
        build(panel_frame(), tmp_path / "x", within_time_order="alphabetical")
    assert not (tmp_path / "x").exists()


def test_a_corpus_from_before_the_option_reads_as_file_order():
    assert corpus_within_time_order({}) == "file"
    assert corpus_within_time_order(None) == "file"
    assert corpus_within_time_order({"within_time_order": "code"}) == "code"


def demo_static_codes() -> set[str]:
    data = shared_path("clinical", "mimic-iv-demo-meds") / "data"
    frame = pl.scan_parquet(data / "*" / "*.parquet").filter(pl.col("time").is_null())
    return set(frame.select("code").unique().collect()["code"].to_list())


def _read_demo() -> tuple:
    spec = get_adapter("meds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        events = spec.read([shared_path("clinical", "mimic-iv-demo-meds")], MedsOptions())
    return events, TokenScheme(**spec.scheme_defaults)


def test_mimic_demo_file_order_is_main_and_code_order_keeps_rows_times_index(tmp_path):
    """The real case: file order is main's corpus before the option (checksums); code
    order keeps rows, times, index and vocabulary and puts the timestamps' codes in order."""
    splits = SplitConfig(**get_adapter("meds").split_defaults)
    events, scheme = _read_demo()
    file = build_corpus(events, tmp_path / "file", scheme, splits, workers=1)
    for name, digest in DEMO_SHA256.items():
        assert sha256(file.path / name) == digest, name
    events, scheme = _read_demo()
    code = build_corpus(events, tmp_path / "code", scheme, splits, within_time_order="code")
    for name in SAME:
        assert (file.path / name).read_bytes() == (code.path / name).read_bytes(), name
    assert file.manifest["counts"] == code.manifest["counts"]
    counts = code.manifest["counts"]
    assert counts["rows_read"] == counts["events"] + counts["rejects"]
    assert sha256(file.path / "tokens.bin") != sha256(code.path / "tokens.bin")
    # times.bin holds float32 seconds: a few timestamps seconds apart read as one there.
    assert sorted_share(code, demo_static_codes()) > 0.998
    assert sorted_share(file, demo_static_codes()) < 0.3


@pytest.mark.slow
def test_mimic_demo_code_order_with_two_workers_and_hashed_partitions(tmp_path):
    splits = SplitConfig(**get_adapter("meds").split_defaults)
    built = []
    for name, workers, hashed in (("one", 1, False), ("two", 2, False), ("hash", 1, True)):
        events, scheme = _read_demo()
        if hashed:
            events = dataclasses.replace(events, source_parts=())
        built.append(
            build_corpus(
                events,
                tmp_path / name,
                scheme,
                splits,
                workers=workers,
                within_time_order="code",
                rows_per_bucket=300_000,
            )
        )
    for other in built[1:]:
        for name in ("tokens.bin", *SAME):
            assert (built[0].path / name).read_bytes() == (other.path / name).read_bytes(), name
    assert built[1].manifest["build"]["workers"] == 2
    assert built[2].manifest["build"]["partitions_from"] == "hash"
