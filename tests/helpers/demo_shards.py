"""The MIMIC-IV demo cut into small MEDS datasets of a few shards, read and built the
way the tests of the build's source parts (tests/corpus/test_source_parts.py) do."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import polars as pl

from helpers.shared_data import shared_path
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.base import Ingested
from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions
from seqlm.corpus import SplitConfig, build_corpus
from seqlm.vocabularies import TokenScheme

COMPARED = ("tokens.bin", "times.bin", "index.parquet", "tokenizer.json", "scheme.json")
DEMO = "mimic-iv-demo-meds"


def assert_same_files(a: Path, b: Path) -> None:
    for name in COMPARED:
        assert (a / name).exists() == (b / name).exists(), name
        if (a / name).exists():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def read(root: Path) -> tuple[Ingested, TokenScheme]:
    spec = get_adapter("meds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        events = spec.read([root], MedsOptions())
    scheme = TokenScheme(**{**spec.scheme_defaults, "min_entities": 2})
    return events, scheme


def small_demo(root: Path, split_subjects: bool = False, shuffle: bool = False) -> Path:
    """The demo's 12 smallest train subjects in two shards, and 3 of tuning and of
    held_out; `split_subjects`: the train shards cut by time instead (every subject in
    both); `shuffle`: each shard's rows in a random order."""
    demo = shared_path("clinical", DEMO) / "data"
    for split, keep in (("train", 12), ("tuning", 3), ("held_out", 3)):
        frame = pl.read_parquet(demo / split / "0.parquet", columns=None)
        sizes = frame.group_by("subject_id").len().sort("len", "subject_id")
        frame = frame.filter(pl.col("subject_id").is_in(sizes["subject_id"].head(keep).implode()))
        if split == "train" and split_subjects:
            cut = frame["time"].drop_nulls().median()
            early = pl.col("time").is_null() | (pl.col("time") <= cut)
            shards = [frame.filter(early), frame.filter(~early)]
        elif split == "train":
            first = sizes["subject_id"].head(keep // 2).implode()
            shards = [frame.filter(pl.col("subject_id").is_in(first)), frame]
            shards[1] = frame.filter(~pl.col("subject_id").is_in(first))
        else:
            shards = [frame]
        (root / "data" / split).mkdir(parents=True)
        for number, shard in enumerate(shards):
            if shuffle:
                shard = shard.sample(fraction=1.0, shuffle=True, seed=number)
            shard.write_parquet(root / "data" / split / f"{number}.parquet")
    return root


def build(events: Ingested, out: Path, scheme: TokenScheme, **kwargs):
    """Built with partitions of the largest shard's rows (so no two shards are grouped)."""
    rows = max(rows for rows, _ in events.source_parts)
    return build_corpus(events, out, scheme, SplitConfig(), rows_per_bucket=rows, **kwargs)


def hashed(events: Ingested) -> Ingested:
    """The same events without their shards: the builder hashes them."""
    return dataclasses.replace(events, source_parts=())
