"""Prefix filters, code rewrites and cohort windows of the MEDS adapter."""

from __future__ import annotations

import math
import warnings
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from helpers.meds_data import meds_frame, t, write_meds
from helpers.shared_data import shared_path

from seqlm.config import load_toml, options_from_mapping
from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions, read_meds
from seqlm.corpora_adapters.meds_cohort import (
    COHORT_SUBJECT_REASON,
    COHORT_WINDOW_REASON,
    PREFIX_REASON,
    CodeRewrite,
    rewrite_codes,
)
from seqlm.errors import ConfigError


def read(root: Path, **options) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        ingested = read_meds([root], options_from_mapping(MedsOptions, options))
    return ingested.events.collect(), ingested.rejects.to_frame(), ingested.rows_read


def codes_of(events: pl.DataFrame, entity: str) -> list[str]:
    return events.filter(pl.col("entity") == entity)["code"].to_list()


@pytest.fixture
def admissions(tmp_path: Path) -> Path:
    """Subject 1: two admissions, chest pain diagnosed (at discharge) in the second.
    Subject 2: no chest pain. Subject 3: chest pain but also an excluded code."""
    subject1 = [
        (1, None, "GENDER//M", None, None),
        (1, datetime(2040, 1, 1), "MEDS_BIRTH", None, None),
        (1, t(1, 8), "HOSPITAL_ADMISSION//EW", None, None),
        (1, t(1, 9), "LAB//A", 1.0, None),
        (1, t(2), "HOSPITAL_DISCHARGE//HOME", None, None),
        (1, t(2), "DIAGNOSIS//ICD//10//I2510", None, None),
        (1, t(10, 8), "HOSPITAL_ADMISSION//EW", None, None),
        (1, t(10, 9), "LAB//A", 2.0, None),
        (1, t(12), "HOSPITAL_DISCHARGE//HOME", None, None),
        (1, t(12), "DIAGNOSIS//ICD//10//R079", None, None),
        (1, t(20), "LAB//A", 3.0, None),
        (1, t(25), "DIAGNOSIS//ICD//10//R0789", None, None),
    ]
    subject2 = [
        (2, None, "GENDER//F", None, None),
        (2, t(3), "HOSPITAL_ADMISSION//EW", None, None),
        (2, t(4), "DIAGNOSIS//ICD//10//I2510", None, None),
    ]
    subject3 = [
        (3, t(3), "DIAGNOSIS//ICD//10//R079", None, None),
        (3, t(4), "DIAGNOSIS//ICD//10//C349", None, None),
    ]
    return write_meds(
        tmp_path / "meds", {"train/0.parquet": meds_frame(subject1 + subject2 + subject3)}
    )


CHEST_PAIN = ["DIAGNOSIS//ICD//10//R07", "DIAGNOSIS//ICD//9//7865"]


def test_cohort_from_the_admission_onward(admissions: Path):
    events, rejects, rows = read(
        admissions, cohort={"include": CHEST_PAIN, "exclude": ["DIAGNOSIS//ICD//10//C"]}
    )
    assert events.height + rejects.height == rows == 17
    assert set(events["entity"].to_list()) == {"1"}
    assert codes_of(events, "1") == [
        "GENDER//M",
        "AGE",
        "HOSPITAL_ADMISSION//EW",
        "LAB//A",
        "HOSPITAL_DISCHARGE//HOME",
        "DIAGNOSIS//ICD//10//R079",
        "LAB//A",
        "DIAGNOSIS//ICD//10//R0789",
    ]
    # The age is taken at the first event in the window (the second admission).
    age = events.filter(pl.col("code") == "AGE")["value"].item()
    assert age == math.floor((t(10, 8) - datetime(2040, 1, 1)).days / 365.25)  # completed years
    reasons = rejects.group_by("reason").len().sort("reason")
    assert dict(reasons.iter_rows()) == {COHORT_SUBJECT_REASON: 5, COHORT_WINDOW_REASON: 4}


def test_cohort_window_variants(admissions: Path):
    one = {"include": CHEST_PAIN, "exclude": ["DIAGNOSIS//ICD//10//C"]}
    events = read(admissions, cohort={**one, "end": "discharge"})[0]
    assert codes_of(events, "1")[2:] == [
        "HOSPITAL_ADMISSION//EW",
        "LAB//A",
        "HOSPITAL_DISCHARGE//HOME",
        "DIAGNOSIS//ICD//10//R079",
    ]
    events = read(admissions, cohort={**one, "start": "match"})[0]
    assert codes_of(events, "1")[2:] == [
        "HOSPITAL_DISCHARGE//HOME",  # same time as the match
        "DIAGNOSIS//ICD//10//R079",
        "LAB//A",
        "DIAGNOSIS//ICD//10//R0789",
    ]
    events = read(admissions, cohort={**one, "start": "match", "occurrence": "last"})[0]
    assert codes_of(events, "1")[2:] == ["DIAGNOSIS//ICD//10//R0789"]
    events = read(admissions, cohort={**one, "start": "match", "hours_before": 39})[0]
    assert codes_of(events, "1")[2] == "LAB//A"  # 10th 09:00 is 39 h before the 12th
    events = read(admissions, cohort={**one, "max_hours": 24})[0]
    assert codes_of(events, "1")[2:] == ["HOSPITAL_ADMISSION//EW", "LAB//A"]
    events = read(admissions, cohort={**one, "start": "history"})[0]
    assert len(codes_of(events, "1")) == 12  # the whole record; birth became AGE
    events = read(admissions, cohort={"include": CHEST_PAIN})[0]
    assert set(events["entity"].to_list()) == {"1", "3"}


def test_prefix_filters_count_their_rejects(admissions: Path):
    events, rejects, rows = read(admissions, keep_prefixes=["LAB", "GENDER", "MEDS_BIRTH"])
    assert set(events["kind"].to_list()) == {"LAB", "GENDER", "AGE"}
    assert rejects["reason"].to_list() == [PREFIX_REASON] * 11
    assert events.height + rejects.height == rows
    events, rejects, _ = read(admissions, drop_prefixes=["DIAGNOSIS//ICD//10//R079"])
    assert "DIAGNOSIS//ICD//10//R079" not in events["code"].to_list()
    assert "DIAGNOSIS//ICD//10//R0789" in events["code"].to_list()
    assert rejects.height == 2
    # A prefix matches whole `//` segments only: `LA` is not a prefix of `LAB//A`.
    events, _, _ = read(admissions, keep_prefixes=["LA"])
    assert events.height == 0


def test_rewrites_truncate_icd_and_apply_rules_in_order(admissions: Path):
    events, _, _ = read(
        admissions,
        truncate_icd=3,
        rewrite=[
            {"pattern": "^HOSPITAL_(ADMISSION|DISCHARGE)//.*$", "replacement": "HOSPITAL_$1"},
            {"pattern": "^DIAGNOSIS//ICD//10//R07$", "replacement": "CHEST_PAIN"},
        ],
    )
    codes = set(events["code"].to_list())
    assert {"DIAGNOSIS//ICD//10//I25", "CHEST_PAIN", "HOSPITAL_ADMISSION"} <= codes
    assert not any(c.startswith("DIAGNOSIS//ICD//10//R07") for c in codes)
    # The kind follows the rewritten code.
    kinds = dict(events.select("code", "kind").unique().iter_rows())
    assert kinds["CHEST_PAIN"] == "CHEST_PAIN"
    short = rewrite_codes(pl.lit("DIAGNOSIS//ICD//9//V08"), 3, [])
    assert pl.select(short).item() == "DIAGNOSIS//ICD//9//V08"  # already 3 characters


def test_declarative_config_from_toml(tmp_path: Path):
    config = tmp_path / "cohort.toml"
    config.write_text(
        """
keep_prefixes = ["LAB", "DIAGNOSIS"]
truncate_icd = 3

[[rewrite]]
pattern = "^LAB//(\\\\d+)//.*$"
replacement = "LAB//$1"

[cohort]
include = ["DIAGNOSIS//ICD//10//R07"]
start = "admission"
end = "discharge"
"""
    )
    options = options_from_mapping(MedsOptions, load_toml(config))
    assert options.rewrite == [CodeRewrite(pattern="^LAB//(\\d+)//.*$", replacement="LAB//$1")]
    assert options.cohort is not None and options.cohort.end == "discharge"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cohort": {"include": []}}, "at least one"),
        ({"cohort": {"include": ["("]}}, "not a valid regular expression"),
        ({"cohort": {"include": ["X"], "start": "yesterday"}}, "must be one of"),
        ({"cohort": {"include": ["X"], "max_hours": -1}}, "max_hours"),
        ({"rewrite": [{"pattern": "[", "replacement": ""}]}, "rewrite rule 1"),
        ({"truncate_icd": 0}, "truncate_icd"),
        ({"split_folders": {"dev": "validation"}}, "split_folders"),
    ],
)
def test_bad_declarations_are_config_errors(admissions: Path, options, message):
    with pytest.raises(ConfigError, match=message):
        read(admissions, **options)


def test_chest_pain_cohort_on_mimic_demo():
    root = shared_path("clinical", "mimic-iv-demo-meds")
    events, rejects, rows = read(root, cohort={"include": CHEST_PAIN, "end": "discharge"})
    assert events.height + rejects.height == rows == 916_166
    assert events["entity"].n_unique() == 5
    per_subject = (
        events.drop_nulls("time")
        .group_by("entity")
        .agg(first=pl.col("code").first(), last_time=pl.col("time").max())
    )
    # Every window opens with the admission and closes with its discharge.
    assert all(c.startswith("HOSPITAL_ADMISSION//") for c in per_subject["first"].to_list())
    discharges = (
        events.filter(pl.col("kind") == "HOSPITAL_DISCHARGE")
        .group_by("entity")
        .agg(pl.col("time").max())
    )
    assert (
        per_subject.join(discharges, on="entity")
        .filter(pl.col("last_time") != pl.col("time"))
        .is_empty()
    )


def test_prism_cardiac_example_config_selects_the_chest_pain_cohort():
    from seqlm.ingest import resolve_ingest_config

    root = shared_path("clinical", "mimic-iv-demo-meds")
    config = Path(__file__).resolve().parents[2] / "examples" / "prism_cardiac"
    sections = resolve_ingest_config(config / "prism_cardiac.toml")
    assert sections["scheme"] == {"min_entities": 5}
    events, rejects, rows = read(root, **sections["adapter"])
    assert events.height == 64_232 and events.height + rejects.height == rows
    assert events["entity"].n_unique() == 5
    parts = events["code"].str.split("//")
    icd = parts.filter(events["code"].str.starts_with("DIAGNOSIS//ICD//"))
    assert icd.len() > 0 and (icd.list.get(3).str.len_chars() <= 3).all()
    # Drug names are cut to their first word in both medication code shapes.
    drugs = parts.filter(parts.list.get(0) == "MEDICATION")
    drug = pl.when(drugs.list.get(1).is_in(["START", "STOP"])).then(drugs.list.get(2))
    drug = pl.select(drug.otherwise(drugs.list.get(1))).to_series()
    assert drugs.len() > 1000 and not drug.str.contains(" ").any()
