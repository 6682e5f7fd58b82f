"""The MEDS reader: layouts, splits, demographics, rejects and errors, on written and real data."""

from __future__ import annotations

import math
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.meds_data import meds_frame, t, write_meds
from helpers.shared_data import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlm.config import options_from_mapping
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.meds import (
    MEDS_SCHEME_DEFAULTS,
    MedsMetadataWarning,
    MedsOptions,
    read_meds,
)
from seqlm.errors import InputError, SeqlmError
from seqlm.events import EVENT_COLUMNS

MIMIC_ROWS = 916_166
BIRTH = datetime(2050, 1, 1)


def read(root: Path, **options) -> tuple:
    """Read quietly; return (ingested, events DataFrame, rejects DataFrame)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        ingested = read_meds([root], options_from_mapping(MedsOptions, options))
    return ingested, ingested.events.collect(), ingested.rejects.to_frame()


def events_of(frame: pl.DataFrame, entity: str) -> list[tuple]:
    rows = frame.filter(pl.col("entity") == entity).select("time", "kind", "code", "value", "text")
    return [
        (time, kind, code, None if value is None else round(value, 4), text)
        for time, kind, code, value, text in rows.iter_rows()
    ]


@pytest.fixture
def small_meds(tmp_path: Path) -> Path:
    """MEDS 0.4: static rows, null values, a code missing from codes.parquet, and subject
    2 spread over two shards of the train split (rows out of time order in shard 1)."""
    subject1 = [
        (1, None, "GENDER//F", None, None),
        (1, BIRTH, "MEDS_BIRTH", None, None),
        (1, t(1, 8), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (1, t(1, 9), "LAB//A//mg", 1.5, None),
        (1, t(1, 9), "LAB//A//mg", None, None),
        (1, t(1, 9), "LAB//B", None, "NEG"),
        (1, t(2), "HOSPITAL_DISCHARGE//HOME", None, None),
        (1, t(2), "DIAGNOSIS//ICD//10//I2510", None, None),
        (1, t(10), "MEDS_DEATH", None, None),
    ]
    subject2_a = [
        (2, None, "GENDER//M", None, None),
        (2, datetime(2060, 1, 1), "MEDS_BIRTH", None, None),
        (2, t(3), "LAB//A//mg", 2.0, None),
    ]
    subject2_b = [
        (2, t(5), "LAB//A//mg", 3.0, None),
        (2, t(4), "DIAGNOSIS//ICD//9//4280", None, None),
    ]
    subject3 = [
        (3, None, "GENDER//F", None, None),
        (3, t(6), "LAB//A//mg", 9.0, None),
    ]
    return write_meds(
        tmp_path / "meds",
        {
            "train/0.parquet": meds_frame(subject1 + subject2_a),
            "train/1.parquet": meds_frame(subject2_b),
            "held_out/0.parquet": meds_frame(subject3),
        },
        splits={1: "train", 2: "train", 3: "held_out"},
        codes=["GENDER//F", "GENDER//M", "LAB//A//mg", "MEDS_BIRTH"],
    )


def test_small_dataset_gives_exact_events(small_meds: Path):
    ingested, events, rejects = read(small_meds)
    assert events.columns == list(EVENT_COLUMNS)
    assert ingested.rows_read == 16 == events.height
    assert rejects.height == 0
    age1 = math.floor((t(1, 8) - BIRTH).total_seconds() / (365.25 * 86400))  # completed years
    assert events_of(events, "1") == [
        (None, "GENDER", "GENDER//F", None, None),
        (None, "AGE", "AGE", age1, None),
        (t(1, 8), "HOSPITAL_ADMISSION", "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (t(1, 9), "LAB", "LAB//A//mg", 1.5, None),
        (t(1, 9), "LAB", "LAB//A//mg", None, None),
        (t(1, 9), "LAB", "LAB//B", None, "NEG"),
        (t(2), "HOSPITAL_DISCHARGE", "HOSPITAL_DISCHARGE//HOME", None, None),
        (t(2), "DIAGNOSIS", "DIAGNOSIS//ICD//10//I2510", None, None),
        (t(10), "MEDS_DEATH", "MEDS_DEATH", None, None),
    ]
    # Subject 2's rows come from two shards and are put in time order.
    age2 = math.floor((t(3) - datetime(2060, 1, 1)).total_seconds() / (365.25 * 86400))
    assert events_of(events, "2") == [
        (None, "GENDER", "GENDER//M", None, None),
        (None, "AGE", "AGE", age2, None),
        (t(3), "LAB", "LAB//A//mg", 2.0, None),
        (t(4), "DIAGNOSIS", "DIAGNOSIS//ICD//9//4280", None, None),
        (t(5), "LAB", "LAB//A//mg", 3.0, None),
    ]
    # No birth row: no AGE event.
    assert events_of(events, "3") == [
        (None, "GENDER", "GENDER//F", None, None),
        (t(6), "LAB", "LAB//A//mg", 9.0, None),
    ]
    splits = dict(events.group_by("entity").agg(pl.col("split").first()).iter_rows())
    assert splits == {"1": "train", "2": "train", "3": "held_out"}
    assert events["time"].dtype == pl.Datetime("us")
    assert ingested.settings["split_source"] == "metadata/subject_splits.parquet"


def test_codes_missing_from_metadata_warn_with_count(small_meds: Path):
    with pytest.warns(MedsMetadataWarning, match=r"6 of 10 codes"):
        ingested = read_meds([small_meds], MedsOptions())
    assert ingested.settings["codes_missing_from_metadata"] == 6
    (small_meds / "metadata" / "codes.parquet").unlink()
    ingested, _, _ = read(small_meds)
    assert ingested.settings["codes_missing_from_metadata"] is None


def test_birth_as_event_keeps_the_timed_row(small_meds: Path):
    _, events, _ = read(small_meds, birth="event")
    first = events_of(events, "1")[:3]
    assert first == [
        (None, "GENDER", "GENDER//F", None, None),
        (BIRTH, "MEDS_BIRTH", "MEDS_BIRTH", None, None),
        (t(1, 8), "HOSPITAL_ADMISSION", "HOSPITAL_ADMISSION//EW EMER.", None, None),
    ]


def test_invalid_rows_are_rejected_with_file_and_row(tmp_path: Path):
    rows = [
        (1, None, "GENDER//F", None, None),
        (1, BIRTH, "MEDS_BIRTH", None, None),
        (1, datetime(2049, 1, 1), "LAB//early", None, None),  # before birth
        (1, t(1), "LAB//A", float("nan"), None),
        (1, t(1), "LAB//A", float("inf"), None),
        (1, t(2), None, 1.0, None),  # null code
        (None, t(2), "LAB//A", 1.0, None),  # null subject
        (1, datetime(2051, 1, 1), "MEDS_BIRTH", None, None),  # a second birth
        (2, None, "MEDS_BIRTH", None, None),  # birth without time
    ]
    root = write_meds(tmp_path / "m", {"train/0.parquet": meds_frame(rows)})
    ingested, events, rejects = read(root)
    assert ingested.rows_read == 9 == events.height + rejects.height
    by_row = dict(zip(rejects["row"].to_list(), rejects["reason"].to_list(), strict=True))
    assert by_row == {
        3: "before birth",
        6: "null code",
        7: "null subject_id",
        8: "duplicate MEDS_BIRTH",
        9: "MEDS_BIRTH without time",
    }
    assert set(rejects["file"].to_list()) == {"data/train/0.parquet"}
    # Non-finite values: the event stays, the value is nulled.
    lab = events.filter(pl.col("code") == "LAB//A")
    assert lab.height == 2 and lab["value"].null_count() == 2
    _, events, rejects = read(root, non_finite="reject")
    assert rejects.filter(pl.col("reason") == "non-finite numeric_value")["row"].to_list() == [4, 5]
    assert events.filter(pl.col("code") == "LAB//A").height == 0


def test_time_variants_and_extra_columns(tmp_path: Path):
    """datetime[ns], a time zone, float64 values, extra columns, shards nested deeper."""
    ns_frame = meds_frame(
        [(1, None, "GENDER//F", None, None), (1, t(1, 12), "LAB//A", 1.0, None)],
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("ns"),
            "code": pl.String,
            "numeric_value": pl.Float64,
            "text_value": pl.String,
        },
    ).with_columns(hadm_id=pl.lit(7), unit=pl.when(pl.col("code") == "LAB//A").then(pl.lit("mg")))
    tz_frame = meds_frame([(2, t(1, 12), "LAB//A", 2.0, None)]).with_columns(
        pl.col("time").dt.replace_time_zone("Europe/Paris")
    )
    root = write_meds(
        tmp_path / "m",
        {"test/part-a/0.parquet": ns_frame, "test/part-b/0.parquet": tz_frame},
    )
    ingested, events, _ = read(root)
    assert ingested.settings["split_source"] == "data folders"
    assert events["split"].to_list() == ["held_out"] * 3
    assert events["time"].dtype == pl.Datetime("us")
    times = dict(events.drop_nulls("time").select("entity", "time").iter_rows())
    assert times == {"1": t(1, 12), "2": t(1, 11)}  # 12:00 in Paris is 11:00 UTC
    _, events, _ = read(root, code_suffix_columns=["unit"])
    codes = events.sort("entity", "order")["code"].to_list()
    assert codes == ["GENDER//F", "LAB//A//mg", "LAB//A"]  # no unit column in shard b
    with pytest.raises(InputError, match="no shard has"):
        read(root, code_suffix_columns=["route"])


def test_inputs_data_folder_files_and_named_split_folders(small_meds: Path, tmp_path: Path):
    whole = read(small_meds)[1]
    assert read(small_meds / "data")[1].equals(whole)
    files = sorted((small_meds / "data").rglob("*.parquet"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        ingested = read_meds(files, MedsOptions())
    assert ingested.events.collect().equals(whole)
    rows = [(5, t(1), "LAB//A", 1.0, None)]
    root = write_meds(tmp_path / "m", {"cohort_a/0.parquet": meds_frame(rows)})
    assert read(root)[1]["split"].to_list() == [None]
    _, events, _ = read(root, split_folders={"cohort_a": "tuning"})
    assert events["split"].to_list() == ["tuning"]
    _, events, _ = read(small_meds, split_source="none")
    assert events["split"].null_count() == events.height


def test_missing_or_mistyped_columns_name_file_and_column(tmp_path: Path):
    frame = meds_frame([(1, t(1), "LAB//A", 1.0, None)])
    root = write_meds(tmp_path / "a", {"train/0.parquet": frame.drop("code")})
    with pytest.raises(InputError, match="code") as err:
        read(root)
    assert err.value.column == "code" and err.value.file.endswith("train/0.parquet")
    root = write_meds(
        tmp_path / "b", {"train/0.parquet": frame.with_columns(pl.col("time").cast(pl.String))}
    )
    with pytest.raises(InputError, match="timestamp") as err:
        read(root)
    assert err.value.column == "time"
    bad = tmp_path / "c" / "data" / "train" / "0.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="parquet"):
        read(tmp_path / "c")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="no parquet shards"):
        read(tmp_path / "d")


def test_subject_in_two_splits_is_an_error_naming_both(tmp_path: Path):
    train = meds_frame([(1, t(1), "LAB//A", 1.0, None)])
    held = meds_frame([(2, t(1), "LAB//A", 1.0, None), (1, t(2), "LAB//A", 1.0, None)])
    root = write_meds(tmp_path / "a", {"train/0.parquet": train, "held_out/0.parquet": held})
    with pytest.raises(InputError, match="two splits") as err:
        read(root)
    message = str(err.value)
    assert "'train'" in message and "'held_out'" in message
    assert "data/train/0.parquet row 1" in message or "data/held_out/0.parquet row 2" in message
    root = write_meds(tmp_path / "b", {"0.parquet": train}, splits={1: "train"})
    pl.DataFrame({"subject_id": [1, 1], "split": ["train", "held_out"]}).write_parquet(
        root / "metadata" / "subject_splits.parquet"
    )
    with pytest.raises(InputError, match="two splits") as err:
        read(root)
    assert err.value.row == 2 and err.value.file.endswith("subject_splits.parquet")
    root = write_meds(tmp_path / "c", {"train/0.parquet": train}, splits={1: "held_out"})
    with pytest.raises(InputError, match="subject_splits.parquet puts it in 'held_out'"):
        read(root)


def test_unsorted_rows_are_sorted_or_an_error(tmp_path: Path):
    rows = [(1, t(3), "LAB//C", None, None), (1, t(1), "LAB//A", None, None)]
    root = write_meds(tmp_path / "m", {"train/0.parquet": meds_frame(rows)})
    assert read(root)[1]["code"].to_list() == ["LAB//A", "LAB//C"]
    with pytest.raises(InputError, match="not in time order") as err:
        read(root, unsorted="error")
    assert err.value.row == 2 and err.value.column == "time"


def test_registered_with_clinical_scheme_defaults():
    spec = get_adapter("meds")
    assert spec.options is MedsOptions
    assert spec.scheme_defaults == MEDS_SCHEME_DEFAULTS
    assert spec.scheme_defaults["min_entities"] == 5
    assert spec.scheme_defaults["value_bins"] == 10


_CODES = st.sampled_from(
    [None, "", "MEDS_BIRTH", "GENDER//F", "LAB//A", "LAB//B//mg", "HOSPITAL_ADMISSION", "X"]
)
_TIMES = st.one_of(st.none(), st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)))
_VALUES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))
_ROWS = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(1, 4)), _TIMES, _CODES, _VALUES, st.none()),
    min_size=0,
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shard_a=_ROWS,
    shard_b=_ROWS,
    second_folder=st.sampled_from(["train", "held_out", "extra"]),
    birth=st.sampled_from(["age", "event"]),
    non_finite=st.sampled_from(["null_value", "reject"]),
    cohort=st.booleans(),
)
def test_any_rows_give_accounted_events_or_a_seqlm_error(
    shard_a, shard_b, second_folder, birth, non_finite, cohort
):
    options = {"birth": birth, "non_finite": non_finite}
    if cohort:
        options["cohort"] = {"include": ["LAB//A"], "start": "admission", "end": "discharge"}
    with tempfile.TemporaryDirectory() as folder:
        shards = {"train/0.parquet": meds_frame(shard_a)}
        if shard_b:
            shards[f"{second_folder}/1.parquet"] = meds_frame(shard_b)
        root = write_meds(Path(folder), shards)
        try:
            ingested, events, rejects = read(root, **options)
        except SeqlmError:
            return
    assert ingested.rows_read == len(shard_a) + len(shard_b)
    assert events.height + rejects.height == ingested.rows_read
    assert events["code"].null_count() == 0 and events["entity"].null_count() == 0
    assert all(math.isfinite(v) for v in events["value"].drop_nulls().to_list())
    if birth == "age":
        assert "MEDS_BIRTH" not in events["code"].to_list()


_COLUMN_TYPES = {
    "subject_id": [pl.Int64, pl.Int32, pl.UInt64, pl.String, pl.Float64, pl.Null],
    "time": [pl.Datetime("us"), pl.Datetime("ns"), pl.Datetime("ms", "UTC"), pl.Date,
             pl.String, pl.Int64, pl.Null],
    "code": [pl.String, pl.Categorical, pl.Int64, pl.Null],
    "numeric_value": [pl.Float32, pl.Float64, pl.Int64, pl.String, pl.Null, None],
    "text_value": [pl.String, pl.Int64, pl.Null, None],
}  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.fixed_dictionaries({c: st.sampled_from(t) for c, t in _COLUMN_TYPES.items()}))
def test_any_column_types_give_events_or_an_input_error(types):
    frame = meds_frame(
        [(1, None, "GENDER//F", None, "a"), (1, t(1), "LAB//A", 2.5, None)],
    )
    columns = []
    for name, dtype in types.items():
        if dtype is None:
            continue
        if dtype == pl.Null:
            columns.append(pl.lit(None).alias(name))
        else:
            columns.append(pl.col(name).cast(dtype, strict=False).alias(name))
    # All literal (every column Null): polars makes one row, not two.
    frame = frame.select(columns)
    with tempfile.TemporaryDirectory() as folder:
        root = write_meds(Path(folder), {"train/0.parquet": frame})
        try:
            ingested, events, rejects = read(root)
        except InputError:
            return
    assert ingested.rows_read == frame.height
    assert events.height + rejects.height == frame.height
    assert events["time"].dtype == pl.Datetime("us")


@pytest.fixture(scope="module")
def mimic_events():
    root = shared_path("clinical", "mimic-iv-demo-meds")
    with pytest.warns(MedsMetadataWarning, match="4,374 of 7,035 codes"):
        ingested = read_meds([root], MedsOptions())
    return ingested, ingested.events.collect()


def test_mimic_demo_accounts_for_every_row(mimic_events):
    ingested, events = mimic_events
    assert ingested.rows_read == MIMIC_ROWS
    assert events.height + len(ingested.rejects) == MIMIC_ROWS
    assert len(ingested.rejects) == 0  # the demo is clean: every row is an event


def test_mimic_demo_uses_the_dataset_splits(mimic_events):
    ingested, events = mimic_events
    per_split = dict(events.group_by("split").agg(pl.col("entity").n_unique()).iter_rows())
    assert per_split == {"train": 80, "tuning": 10, "held_out": 10}
    assert ingested.settings["dataset"]["meds_version"] == "0.3.3"
    # The folder names give the same splits (as when subject_splits.parquet is absent).
    root = shared_path("clinical", "mimic-iv-demo-meds")
    ingested, folders, _ = read(root, split_source="folders")
    assert ingested.settings["split_source"] == "data folders"
    assert (
        folders.select("entity", "split")
        .unique()
        .sort("entity")
        .equals(events.select("entity", "split").unique().sort("entity"))
    )


def test_mimic_demo_demographics_form_the_static_prefix(mimic_events):
    _, events = mimic_events
    assert "MEDS_BIRTH" not in events["code"].unique().to_list()
    ages = events.filter(pl.col("code") == "AGE")
    assert ages.height == 100 and ages["time"].null_count() == 100
    assert ages["value"].min() >= 18 and ages["value"].max() < 100
    prefix = events.group_by("entity", maintain_order=True).agg(
        pl.col("kind").head(2), pl.col("time").head(2).is_null().all().alias("static")
    )
    assert prefix["static"].all()
    assert all(sorted(kinds) == ["AGE", "GENDER"] for kinds in prefix["kind"].to_list())
    kinds = set(events["kind"].unique().to_list())
    assert {"LAB", "DIAGNOSIS", "MEDS_DEATH", "HOSPITAL_ADMISSION"} <= kinds
    assert (events["code"].str.split("//").list.first() == events["kind"]).all()


# -- the adapter inside a corpus build: bins and thresholds come from train only --------

LAB_SUBSET = ["LAB//220045", "LAB//50912", "LAB//51221", "GENDER", "MEDS_BIRTH"]


def _ingest(root: Path, out: Path, adapter: dict | None = None, scheme: dict | None = None):
    from seqlm.ingest import ingest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        return ingest("meds", [root], out, {"adapter": adapter or {}, "scheme": scheme or {}})


def _copy_with_values_changed(source: Path, target: Path, split: str | None) -> Path:
    """A copy of the LAB_SUBSET rows of a MEDS dataset, with every value of the `split`
    shard (if any) moved far away. Every build below reads such a copy, so the rows'
    file order (which seeds the vocabulary's value sample) is the same in all."""
    kept = pl.any_horizontal(
        (pl.col("code") == p) | pl.col("code").str.starts_with(p + "//") for p in LAB_SUBSET
    )
    for shard in sorted((source / "data").rglob("*.parquet")):
        frame = pl.read_parquet(shard).filter(kept)
        if shard.parent.name == split:
            frame = frame.with_columns(pl.col("numeric_value") * -1000.0 + 1e6)
        path = target / shard.relative_to(source)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
    metadata = target / "metadata"
    metadata.mkdir()
    for file in (source / "metadata").iterdir():
        (metadata / file.name).write_bytes(file.read_bytes())
    return target


def test_mimic_held_out_values_do_not_move_bin_edges(tmp_path: Path):
    root = shared_path("clinical", "mimic-iv-demo-meds")
    original = _ingest(_copy_with_values_changed(root, tmp_path / "same", None), tmp_path / "a")
    moved = _copy_with_values_changed(root, tmp_path / "held", "held_out")
    held = _ingest(moved, tmp_path / "b")
    assert original.vocabulary.value_bins  # the subset has binned lab codes
    assert held.vocabulary.value_bins == original.vocabulary.value_bins
    assert held.vocabulary.tokens == original.vocabulary.tokens
    # The held-out values did change: their tokens moved to other bins.
    held_out = original.index.filter(pl.col("split") == "held_out")["seq_id"].to_list()
    assert any(not np.array_equal(original.sequence(i), held.sequence(i)) for i in held_out)
    # Control: moving train values does move the edges, so the check above can fail.
    changed = _copy_with_values_changed(root, tmp_path / "train", "train")
    trained = _ingest(changed, tmp_path / "c")
    assert trained.vocabulary.value_bins != original.vocabulary.value_bins


def test_privacy_threshold_counts_train_subjects_only(tmp_path: Path):
    rows = []
    for subject in range(1, 13):
        rows.append((subject, t(1), "LAB//COMMON", None, None))
        if subject <= 4:
            rows.append((subject, t(2), "LAB//FOUR_TRAIN", None, None))
        if subject > 6:
            rows.append((subject, t(2), "LAB//HELD_ONLY", None, None))
    frame = meds_frame(rows)
    root = write_meds(
        tmp_path / "m",
        {
            "train/0.parquet": frame.filter(pl.col("subject_id") <= 6),
            "held_out/0.parquet": frame.filter(pl.col("subject_id") > 6),
        },
    )
    corpus = _ingest(root, tmp_path / "corpus")
    assert corpus.manifest["scheme"]["min_entities"] == 5
    tokens = set(corpus.vocabulary.tokens)
    assert "LAB//COMMON" in tokens
    assert "LAB//FOUR_TRAIN" not in tokens and "LAB//HELD_ONLY" not in tokens
    held = corpus.index.filter(pl.col("split") == "held_out")["seq_id"][0]
    assert corpus.vocabulary.decode(corpus.sequence(held)) == [
        "[BOS]", "LAB//COMMON", "[TIME//1d]", "[UNK]", "[EOS]"
    ]  # fmt: skip
    # 4 train subjects held LAB//FOUR_TRAIN, so 4 would hold LAB//[UNK]: under the
    # threshold too, so it is no token (issue 20); held-out rare codes become [UNK].
    assert "LAB//[UNK]" not in tokens


def _one_shard(root: Path) -> Path:
    rows = [(s, t(1 + s % 3, h), f"LAB//{h}", float(h), None) for s in range(6) for h in range(3)]
    return write_meds(root, {"train/0.parquet": meds_frame(rows)})


def test_a_folder_without_metadata_says_which_defaults_it_used(tmp_path):
    """Issue 20: a MEDS folder without metadata/ was ingested without a word."""
    import shutil
    import subprocess
    import sys

    root = _one_shard(tmp_path / "meds")
    shutil.rmtree(root / "metadata")
    ingested = read_meds([root], MedsOptions())
    assert any("has no metadata/ folder" in note for note in ingested.notes)
    out = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, "-m", "seqlm", "ingest", "meds", str(root), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert "has no metadata/ folder" in printed


def test_metadata_without_codes_or_splits_is_noted(tmp_path):
    root = _one_shard(tmp_path / "meds")
    notes = read_meds([root], MedsOptions(split_source="none")).notes
    assert any("no metadata/codes.parquet" in note for note in notes)
    assert any("seqlm's own seeded hash" in note for note in notes)
    full = write_meds(tmp_path / "full", {"a.parquet": meds_frame([(1, t(1), "X", None, None)])},
                      splits={1: "train"}, codes=["X"])  # fmt: skip
    assert read_meds([full], MedsOptions()).notes == []
