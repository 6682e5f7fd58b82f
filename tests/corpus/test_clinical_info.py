"""Clinical corpus figures: tokens per subject, unknown and time shares, lab bin edges."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from helpers.shared_data import shared_path

from seqlm.corpora_adapters.meds import MedsMetadataWarning
from seqlm.corpus import load_corpus
from seqlm.corpus.clinical_info import TIME_KIND, clinical_info, token_kinds
from seqlm.ingest import ingest


def _ingest(root: Path, out: Path, **sections):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        return ingest("meds", [root], out, sections)


@pytest.fixture
def small_corpus(tmp_path: Path):
    """Six train subjects: GENDER, birth, 12 valued LAB//X rows an hour apart, and one
    LAB//RARE row for subject 1 only (below the privacy threshold of 5)."""
    rows = []
    for subject in range(1, 7):
        rows.append((subject, None, "GENDER//F", None))
        rows.append((subject, datetime(1970 + subject, 1, 1), "MEDS_BIRTH", None))
        for hour in range(12):
            value = float(hour)  # the same values in every subject: bins pass the threshold
            rows.append((subject, datetime(2100, 1, 1) + timedelta(hours=hour), "LAB//X", value))
        if subject == 1:
            rows.append((1, datetime(2100, 1, 2), "LAB//RARE", None))
    frame = pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.String,
            "numeric_value": pl.Float32,
        },
        orient="row",
    )
    shard = tmp_path / "meds" / "data" / "train" / "0.parquet"
    shard.parent.mkdir(parents=True)
    frame.write_parquet(shard)
    return _ingest(tmp_path / "meds", tmp_path / "corpus", scheme={"time_gap_edges": ["1h"]})


def test_small_corpus_figures_are_exact(small_corpus):
    info = clinical_info(small_corpus)
    # Per subject: BOS, GENDER, AGE, 12 labs, 11 one-hour gaps, EOS = 27; subject 1 also
    # has a 13 h gap (more than 10 last edges: one [TIME//long] token) and [UNK] (LAB//RARE
    # is in fewer than 5 subjects, and so is the LAB//[UNK] it would become): 29.
    total = 6 * 27 + 2
    (train,) = [s for s in info.tokens_per_subject if s.split == "train"]
    assert train.subjects == 6 and train.mean == pytest.approx(total / 6)
    assert train.median == 27
    assert info.time_token_share == pytest.approx((6 * 11 + 1) / total)
    assert info.unknown_share == pytest.approx(1 / total)
    assert info.static_prefix_share == pytest.approx(12 / total)
    kinds = {k.kind: k for k in info.kinds}
    assert kinds["LAB"].tokens == 6 * 12
    assert kinds["LAB"].unknown_share == 0.0
    assert kinds[TIME_KIND].tokens == 67
    assert info.min_entities == 5 and info.merged_tokens >= 1
    (lab,) = info.lab_bins
    assert lab.code == "LAB//X" and lab.tokens == 72 and len(lab.edges) == 9
    assert list(lab.edges) == sorted(lab.edges)
    assert info.split_source == "data folders"
    assert info.to_dict()["lab_bins"][0]["code"] == "LAB//X"


def test_unknown_kinds_match_data_kinds_with_spaces(tmp_path: Path):
    rows = [(s, datetime(2100, 1, 1), "Blood Pressure" if s < 6 else "Blood Pressure//rare")
            for s in range(1, 8)]  # fmt: skip
    frame = pl.DataFrame(
        rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
        orient="row",
    )  # fmt: skip
    shard = tmp_path / "meds" / "data" / "train" / "0.parquet"
    shard.parent.mkdir(parents=True)
    frame.write_parquet(shard)
    info = clinical_info(_ingest(tmp_path / "meds", tmp_path / "corpus"))
    kinds = {k.kind: k for k in info.kinds}
    assert "Blood▁Pressure" not in kinds
    # The two rare codes' subjects are too few for a `Blood▁Pressure//[UNK]` (issue 20):
    # they become [UNK], so the kind counts its 5 common tokens.
    assert kinds["Blood Pressure"].tokens == 5
    assert "Blood▁Pressure//[UNK]" not in load_corpus(tmp_path / "corpus").vocabulary.tokens


def test_token_kinds_cover_every_role(small_corpus):
    vocab = small_corpus.vocabulary
    kinds = dict(zip(vocab.tokens, token_kinds(vocab), strict=True))
    assert kinds["[BOS]"] is None and kinds["GENDER//[UNK]"] == "GENDER"
    assert kinds["[TIME//1h]"] == TIME_KIND and kinds["GENDER//F"] == "GENDER"
    assert kinds[next(t for t in vocab.tokens if t.startswith("AGE"))] == "AGE"


def test_mimic_lab_subset(tmp_path: Path):
    root = shared_path("clinical", "mimic-iv-demo-meds")
    labs = ["220045", "220210", "220277", "220179", "220180", "220181", "50912", "50971",
            "50983", "51221", "51265", "50902"]  # fmt: skip
    adapter = {"keep_prefixes": [f"LAB//{lab}" for lab in labs] + ["GENDER", "MEDS_BIRTH"]}
    corpus = _ingest(root, tmp_path / "corpus", adapter=adapter)
    info = clinical_info(corpus.path)
    assert {s.split for s in info.tokens_per_subject} == {"train", "tuning", "held_out", "all"}
    assert len(info.lab_bins) == 10
    assert all(b.code.startswith("LAB//") for b in info.lab_bins)
    assert [b.tokens for b in info.lab_bins] == sorted(
        (b.tokens for b in info.lab_bins), reverse=True
    )
    assert 0 < info.time_token_share < 0.5 and 0 <= info.unknown_share < 0.2
    assert info.codes_missing_from_metadata == 4374
