from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlm.config import options_from_mapping, parse_option_strings
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.base import Ingested
from seqlm.corpora_adapters.tabular import read_tabular
from seqlm.corpora_adapters.tabular_files import discover_files
from seqlm.corpora_adapters.tabular_mapping import TabularOptions
from seqlm.errors import ConfigError, InputError, SeqlmError
from seqlm.events import EVENT_COLUMNS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "new_domain"


def write_csv(path: Path, header: list[str], rows: list[list[object]], sep: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=sep)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def assert_rows_balance(ingested: Ingested) -> None:
    events = ingested.events.collect()
    assert ingested.rows_read == events.height + len(ingested.rejects)


def test_registered_under_tabular():
    spec = get_adapter("tabular")
    assert spec.options is TabularOptions
    assert spec.read is read_tabular


def test_numeric_time_in_a_unit_becomes_seconds_and_rows_sort(tmp_path):
    path = write_csv(
        tmp_path / "keys.csv",
        ["who", "t_ms", "key", "hold"],
        [["b", 500, "x", 1], ["a", 2000, "y", 2], ["a", 1000, "z", ""], ["a", 1000, "w", 4]],
    )
    options = TabularOptions(entity="who", time="t_ms", time_unit="ms", code="key", value="hold")
    ingested = read_tabular([path], options)
    events = ingested.events.collect()
    assert events.columns == list(EVENT_COLUMNS)
    assert events["entity"].to_list() == ["a", "a", "a", "b"]
    # Ties in time keep input order (z before w), through the default order column.
    assert events["code"].to_list() == ["z", "w", "y", "x"]
    assert events["time"].to_list() == [1.0, 1.0, 2.0, 0.5]
    assert events["value"].to_list() == [None, 4.0, 2.0, 1.0]
    assert events["kind"].unique().to_list() == ["event"]
    assert ingested.rows_read == 4 and len(ingested.rejects) == 0
    assert ingested.adapter == "tabular"
    assert ingested.settings["files"] == 1


@pytest.mark.parametrize(("unit", "seconds"), [("s", 3.0), ("min", 180.0), ("h", 10800.0)])
def test_time_units(tmp_path, unit, seconds):
    path = write_csv(tmp_path / "e.csv", ["e", "t", "c"], [["a", 3, "x"]])
    events = read_tabular([path], TabularOptions(entity="e", time="t", time_unit=unit, code="c"))
    assert events.events.collect()["time"].item() == seconds


def test_bad_rows_become_rejects_with_line_numbers_columns_and_reasons(tmp_path):
    path = write_csv(
        tmp_path / "log.csv",
        ["e", "t", "c", "v", "s"],
        [
            ["a", "1", "x", "0.5", "train"],  # line 2: kept
            ["", "2", "x", "1", ""],  # line 3: no entity
            ["a", "3", "", "1", ""],  # line 4: empty code
            ["a", "soon", "x", "1", ""],  # line 5: time not a number
            ["a", "", "x", "1", ""],  # line 6: time missing
            ["a", "7", "x", "high", ""],  # line 7: value not a number
            ["a", "8", "x", "inf", ""],  # line 8: infinite value
            ["a", "inf", "x", "1", ""],  # line 9: infinite time
            ["a", "10", "x", "nan", "test"],  # line 10: split not allowed
            ["a", "11", "x", "nan", "held_out"],  # line 11: kept, NaN value is no value
        ],
    )
    options = TabularOptions(entity="e", time="t", code="c", value="v", split="s")
    ingested = read_tabular([path], options)
    assert_rows_balance(ingested)
    rejects = ingested.rejects.to_frame().sort("row")
    assert rejects["file"].unique().to_list() == [str(path)]
    assert rejects["row"].to_list() == [3, 4, 5, 6, 7, 8, 9, 10]
    assert rejects["column"].to_list() == ["e", "c", "t", "t", "v", "v", "t", "s"]
    assert rejects["reason"].to_list() == [
        "entity is missing",
        "code is missing",
        "time is not a number",
        "time is missing",
        "value is not a number",
        "value is infinite",
        "time is not a finite number",
        "split is not train, tuning or held_out",
    ]
    events = ingested.events.collect()
    assert events["time"].to_list() == [1.0, 11.0]
    assert events["value"].to_list() == [0.5, None]
    assert events["split"].to_list() == ["train", "held_out"]


def test_blank_line_is_a_reject_not_a_silent_loss(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("e,c\na,x\n\nb,y\n")
    ingested = read_tabular([path], TabularOptions(entity="e", code="c"))
    assert ingested.rows_read == 3
    assert ingested.rejects.to_frame()["row"].to_list() == [3]
    assert ingested.events.collect()["code"].to_list() == ["x", "y"]


def test_missing_time_can_be_kept_as_static_rows(tmp_path):
    path = write_csv(tmp_path / "e.csv", ["e", "t", "c"], [["a", 5, "late"], ["a", "", "sex"]])
    options = TabularOptions(entity="e", time="t", code="c", missing_time="static")
    events = read_tabular([path], options).events.collect()
    assert events["code"].to_list() == ["sex", "late"]
    assert events["time"].to_list() == [None, 5.0]


def test_code_from_several_columns_and_kind_column(tmp_path):
    path = write_csv(
        tmp_path / "labs.csv",
        ["pid", "family", "test", "unit"],
        [["1", "LAB", "51003", "ng/mL"], ["1", "", "51004", ""], ["2", "DX", "", ""]],
    )
    options = TabularOptions(
        entity="pid", kind="family", kind_value="OTHER", code=["family", "test", "unit"]
    )
    events = read_tabular([path], options).events.collect()
    assert events["code"].to_list() == ["LAB//51003//ng/mL", "51004", "DX"]
    assert events["kind"].to_list() == ["LAB", "OTHER", "DX"]


def test_datetime_with_format_and_zones(tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        ["e", "when", "c"],
        [
            ["a", "03/01/2024 10:00:00 +0200", "x"],
            ["a", "03/01/2024 09:30:00 +0000", "y"],
            ["a", "2024-01-03 10:00", "z"],
        ],
    )
    options = TabularOptions(
        entity="e", time="when", time_unit="datetime", time_format="%d/%m/%Y %H:%M:%S %z", code="c"
    )
    ingested = read_tabular([path], options)
    events = ingested.events.collect()
    assert events["time"].dtype == pl.Datetime("us")
    # Zones are converted to UTC, so the +0200 event comes first.
    assert events["code"].to_list() == ["x", "y"]
    assert events["time"].to_list() == [dt.datetime(2024, 1, 3, 8), dt.datetime(2024, 1, 3, 9, 30)]
    reject = ingested.rejects.to_frame()
    assert reject["row"].to_list() == [4]
    assert reject["reason"].to_list() == ["time does not match %d/%m/%Y %H:%M:%S %z"]


def test_iso_datetimes_parse_without_a_format(tmp_path):
    stamps = ["2024-02-01", "2024-02-01 01:02", "2024-02-01T01:02:03.5", "2024-02-01 01:02:04"]
    path = write_csv(tmp_path / "d.csv", ["e", "t", "c"], [["a", s, "x"] for s in stamps])
    options = TabularOptions(entity="e", time="t", time_unit="datetime", code="c")
    events = read_tabular([path], options).events.collect()
    assert events["time"].to_list() == [
        dt.datetime(2024, 2, 1),
        dt.datetime(2024, 2, 1, 1, 2),
        dt.datetime(2024, 2, 1, 1, 2, 3, 500000),
        dt.datetime(2024, 2, 1, 1, 2, 4),
    ]


def test_order_column_breaks_ties_and_bad_order_is_rejected(tmp_path):
    path = write_csv(
        tmp_path / "o.csv",
        ["e", "t", "n", "c"],
        [["a", 1, 2, "second"], ["a", 1, 1, "first"], ["a", 1, "x", "bad"]],
    )
    options = TabularOptions(entity="e", time="t", order="n", code="c")
    ingested = read_tabular([path], options)
    assert ingested.events.collect()["code"].to_list() == ["first", "second"]
    assert ingested.rejects.to_frame()["reason"].to_list() == ["order is not an integer"]


def test_tsv_separator_from_suffix_and_null_values(tmp_path):
    path = write_csv(
        tmp_path / "e.tsv", ["e", "c", "v"], [["a", "x,y", "NA"], ["NA", "z", "1"]], sep="\t"
    )
    options = TabularOptions(entity="e", code="c", value="v", null_values=["NA"])
    ingested = read_tabular([path], options)
    events = ingested.events.collect()
    assert events["code"].to_list() == ["x,y"]
    assert events["value"].to_list() == [None]
    assert ingested.rejects.to_frame()["reason"].to_list() == ["entity is missing"]


def test_explicit_separator(tmp_path):
    path = write_csv(tmp_path / "e.txt", ["e", "c"], [["a", "x"]], sep=";")
    events = read_tabular([path], TabularOptions(entity="e", code="c", separator=";"))
    assert events.events.collect()["code"].to_list() == ["x"]


def test_folder_of_mixed_csv_and_parquet_is_stacked(tmp_path):
    folder = tmp_path / "events"
    (folder / "part").mkdir(parents=True)
    write_csv(
        folder / "a.csv",
        ["e", "t", "c", "site"],
        [["p1", 2, "x", "north"], ["p2", 1, "y", "south"]],
    )
    pl.DataFrame(
        {"e": ["p1", None, "p3"], "t": [1.0, 2.0, 3.0], "c": ["z", "w", "v"], "site": ["north"] * 3}
    ).write_parquet(folder / "part" / "b.parquet")
    (folder / "README.md").write_text("not data")
    (folder / ".hidden.csv").write_text("junk")
    options = TabularOptions(entity="e", time="t", code="c", attributes=["site"])
    ingested = read_tabular([folder], options)
    assert ingested.settings["formats"] == ["csv", "parquet"]
    assert ingested.rows_read == 5
    events = ingested.events.collect()
    assert events.columns == [*EVENT_COLUMNS, "site"]
    assert events.select("entity", "code", "site").rows() == [
        ("p1", "z", "north"),
        ("p1", "x", "north"),
        ("p2", "y", "south"),
        ("p3", "v", "north"),
    ]
    # The default order runs on across files (a.csv first, then part/b.parquet).
    assert sorted(events["order"].to_list()) == [0, 1, 2, 4]
    reject = ingested.rejects.to_frame()
    # Parquet rows are data rows (no header): the second row.
    assert reject.select("file", "row").rows() == [(str(folder / "part" / "b.parquet"), 2)]


def test_shards_with_same_and_different_headers_keep_per_file_line_numbers(tmp_path, monkeypatch):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_csv(folder / "a.csv", ["e", "c"], [["p1", "x"], ["p1", ""]])
    write_csv(folder / "b.csv", ["e", "c"], [["", "y"], ["p2", "y"], ["p2", ""]])
    # Same columns in another order: a separate scan, still matched by name.
    write_csv(folder / "c.csv", ["c", "e"], [["z", "p3"], ["", "p3"]])
    pl.DataFrame({"e": ["p4", "p4"], "c": ["v", None]}).write_parquet(folder / "d.parquet")
    pl.DataFrame({"c": [None, "u"], "e": ["p5", "p5"], "extra": [1, 2]}).write_parquet(
        folder / "e.parquet"
    )
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    ingested = read_tabular([Path("shards")], TabularOptions(entity="e", code="c"))
    assert ingested.rows_read == 11
    rejects = ingested.rejects.to_frame().sort("file", "row")
    assert rejects.select("file", "row", "reason").rows() == [
        (str(Path("shards/a.csv")), 3, "code is missing"),
        (str(Path("shards/b.csv")), 2, "entity is missing"),
        (str(Path("shards/b.csv")), 4, "code is missing"),
        (str(Path("shards/c.csv")), 3, "code is missing"),
        (str(Path("shards/d.parquet")), 2, "code is missing"),
        (str(Path("shards/e.parquet")), 1, "code is missing"),
    ]
    events = ingested.events.collect()
    assert events.select("entity", "code", "order").rows() == [
        ("p1", "x", 0),
        ("p2", "y", 3),
        ("p3", "z", 5),
        ("p4", "v", 7),
        ("p5", "u", 10),
    ]


def test_parquet_datetime_and_wrong_unit(tmp_path):
    path = tmp_path / "d.parquet"
    pl.DataFrame(
        {"e": [1, 1], "t": [dt.datetime(2020, 1, 2), dt.datetime(2020, 1, 1)], "c": ["b", "a"]}
    ).write_parquet(path)
    good = TabularOptions(entity="e", time="t", time_unit="datetime", code="c")
    events = read_tabular([path], good).events.collect()
    assert events["code"].to_list() == ["a", "b"]
    assert events["entity"].to_list() == ["1", "1"]
    with pytest.raises(InputError, match="time_unit") as info:
        read_tabular([path], TabularOptions(entity="e", time="t", code="c"))
    assert info.value.column == "t" and info.value.file == str(path)


def test_missing_column_names_file_column_and_columns_present(tmp_path):
    path = write_csv(tmp_path / "e.csv", ["subject", "code"], [["a", "x"]])
    with pytest.raises(InputError) as info:
        read_tabular([path], TabularOptions(entity="patient", code="code"))
    err = info.value
    assert err.file == str(path) and err.column == "patient"
    assert "'subject', 'code'" in str(err)


def test_empty_file_and_missing_inputs(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"columns present: \(none\)"):
        read_tabular([empty], TabularOptions(entity="e", code="c"))
    with pytest.raises(InputError, match="not found"):
        read_tabular([tmp_path / "nope.csv"], TabularOptions(entity="e", code="c"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("x")
    with pytest.raises(InputError, match="no tabular files"):
        read_tabular([tmp_path / "docs"], TabularOptions(entity="e", code="c"))


def test_header_only_file_reads_zero_rows(tmp_path):
    path = write_csv(tmp_path / "e.csv", ["e", "c"], [])
    ingested = read_tabular([path], TabularOptions(entity="e", code="c"))
    assert ingested.rows_read == 0 and ingested.events.collect().height == 0


def test_ragged_csv_is_an_input_error_naming_the_file(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("e,c\na,x\nb,y,extra\n")
    with pytest.raises(InputError) as info:
        read_tabular([path], TabularOptions(entity="e", code="c"))
    assert info.value.file == str(path)


def test_file_named_twice_is_read_once(tmp_path):
    path = write_csv(tmp_path / "e.csv", ["e", "c"], [["a", "x"]])
    assert discover_files([path, tmp_path]) == [(path, "csv")]
    ingested = read_tabular([path, tmp_path], TabularOptions(entity="e", code="c"))
    assert ingested.rows_read == 1


def test_options_from_toml_and_option_strings():
    mapping = {
        "entity": "run",
        "code": ["a", "b"],
        "time": "t",
        "time_unit": "ms",
        **parse_option_strings(["attributes=['line']", "separator=;"]),
    }
    options = options_from_mapping(TabularOptions, mapping)
    assert options.code_columns == ["a", "b"]
    assert options.attributes == ["line"] and options.separator == ";"
    with pytest.raises(ConfigError, match="time_unit"):
        options_from_mapping(TabularOptions, {"entity": "e", "code": "c", "time_unit": "weeks"})
    with pytest.raises(ConfigError, match="entity"):
        options_from_mapping(TabularOptions, {"code": "c"})
    with pytest.raises(ConfigError, match="clash"):
        TabularOptions(entity="e", code="c", attributes=["time"])
    with pytest.raises(ConfigError, match="time_format"):
        TabularOptions(entity="e", code="c", time_format="%Y")


# ---------------------------------------------------------------------------------------
# Any table written as CSV: a valid Ingested with balanced rows, or a SeqlmError.

cells = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["1", "-2.5", "1e3", "nan", "inf", "NA", " 7 ", "2024-01-01", "x"]),
    st.floats(allow_nan=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
HEADER = ["e", "t", "c", "v", "n", "s"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(cells, min_size=6, max_size=6), max_size=8),
    unit=st.sampled_from(["s", "ms", "datetime"]),
    use_order=st.booleans(),
    missing_time=st.sampled_from(["reject", "static"]),
)
def test_random_tables_ingest_or_raise_seqlm_errors(tmp_path, rows, unit, use_order, missing_time):
    path = write_csv(tmp_path / "random.csv", HEADER, rows)
    options = TabularOptions(
        entity="e",
        time="t",
        time_unit=unit,
        code="c",
        value="v",
        order="n" if use_order else None,
        split="s",
        missing_time=missing_time,
        null_values=["NA"],
    )
    try:
        ingested = read_tabular([path], options)
        events = ingested.events.collect()
    except SeqlmError:
        return
    assert ingested.rows_read == len(rows)
    assert ingested.rows_read == events.height + len(ingested.rejects)
    assert events["entity"].null_count() == 0 and events["code"].null_count() == 0
    finite = events["value"].drop_nulls().to_list()
    assert all(math.isfinite(v) for v in finite)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.one_of(
        st.binary(max_size=40),
        # Mostly CSV structure: separators, quotes, line ends, numbers.
        st.text(alphabet='ab1.,;"\n\r\t x', max_size=80).map(str.encode),
    )
)
def test_random_bytes_never_raise_foreign_errors(tmp_path, raw):
    path = tmp_path / "raw.csv"
    path.write_bytes(b"e,c\n" + raw)
    try:
        ingested = read_tabular([path], TabularOptions(entity="e", code="c"))
        assert_rows_balance(ingested)
    except SeqlmError:
        pass


# ---------------------------------------------------------------------------------------
# Real data.


def test_meds_parquet_folder_through_the_generic_mapping(mimic_demo):
    options = TabularOptions(
        entity="subject_id",
        time="time",
        time_unit="datetime",
        code="code",
        value="numeric_value",
        text="text_value",
        missing_time="static",
    )
    ingested = read_tabular([mimic_demo / "data"], options)
    assert ingested.rows_read == 916_166
    assert len(ingested.rejects) == 0
    summary = ingested.events.frame.select(
        pl.len(),
        pl.col("entity").n_unique(),
        pl.col("time").is_null().sum(),
        pl.col("value").is_not_null().sum(),
    ).collect()
    assert summary.row(0) == (916_166, 100, 100, 405_236)


def test_crowsetta_generic_csv(birdsong_examples):
    options = TabularOptions(entity="notated_path", time="onset_s", code="label")
    ingested = read_tabular([birdsong_examples / "bird1.csv"], options)
    events = ingested.events.collect()
    assert ingested.rows_read == events.height + len(ingested.rejects)
    assert events.height > 100 and events["entity"].n_unique() > 1
    # Within each song the syllables come out in onset order.
    assert events.group_by("entity").agg(pl.col("time").is_sorted())["time"].all()


def test_example_new_domain_mapping_reads_its_csv():
    mapping = EXAMPLE / "mapping.toml"
    if not mapping.exists():
        pytest.skip("examples/new_domain is not in this checkout")
    import tomllib

    options = options_from_mapping(TabularOptions, tomllib.loads(mapping.read_text()))
    ingested = read_tabular([EXAMPLE / "events.csv"], options)
    assert_rows_balance(ingested)
    assert ingested.rows_read == 3000
    # The four glitches the README describes, nothing else.
    assert ingested.rejects.counts_by_reason() == {
        "value is not a number": 2,
        "entity is missing": 1,
        "time does not match %d/%m/%Y %H:%M:%S": 1,
    }
    events = ingested.events.collect()
    assert events["entity"].n_unique() == 40
    assert events.filter(pl.col("code") == "SENSOR//TEMP_C")["value"].null_count() == 0
    assert events.group_by("entity").agg(pl.col("line").n_unique())["line"].max() == 1


def test_example_new_domain_ingests_into_a_corpus(tmp_path):
    from seqlm.ingest import ingest, resolve_ingest_config

    config = resolve_ingest_config(EXAMPLE / "mapping.toml")
    corpus = ingest("tabular", [EXAMPLE / "events.csv"], tmp_path / "corpus", config)
    counts = corpus.manifest["counts"]
    assert (counts["rows_read"], counts["events"], counts["rejects"]) == (3000, 2996, 4)
    assert corpus.index.height == 40 and "line" in corpus.index.columns
    rejects = pl.read_parquet(tmp_path / "corpus" / "rejects.parquet").sort("row")
    assert rejects["row"].to_list() == [45, 856, 1283, 1706]
    # The CSV's own lines, as an editor numbers them (header = line 1).
    lines = (EXAMPLE / "events.csv").read_text().splitlines()
    assert ",ERR" in lines[45 - 1] and lines[1283 - 1].startswith(",")
    assert "31/02/2024" in lines[1706 - 1]
    tokens = corpus.vocabulary.decode(corpus.sequence(0).tolist())
    assert tokens[:3] == ["[BOS]", "STATE//START", "STATE//WARMUP"]
