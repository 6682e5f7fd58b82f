"""The tabular adapter's one checking pass and its files as source partitions
(seqlm/corpora_adapters/tabular_parse.py)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqlm.corpora_adapters.tabular_parse as tabular_parse
from seqlm.corpora_adapters.base import Ingested
from seqlm.corpora_adapters.tabular import read_tabular
from seqlm.corpora_adapters.tabular_mapping import TabularOptions
from seqlm.corpora_adapters.tabular_parse import FileRange, disjoint_files
from seqlm.corpus.splits import SplitConfig
from seqlm.corpus.writer import build_corpus
from seqlm.errors import InputError
from seqlm.vocabularies.scheme import TokenScheme
from tests.helpers.cli_helpers import run_seqlm

OPTIONS = TabularOptions(
    entity="who",
    time="t",
    code=["c1", "c2"],
    value="v",
    attributes=["site"],
    null_values=["NA"],
)
HEADER = ["who", "t", "c1", "c2", "v", "site"]
CORPUS_FILES = ("tokens.bin", "times.bin", "index.parquet", "rejects.parquet", "tokenizer.json")


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def shard_rows(first: int, entities: int, per_entity: int, bad_every: int = 0) -> list[list]:
    """Rows of entities `first`.. (their site constant), a bad cell every `bad_every` rows."""
    rows = []
    for e in range(first, first + entities):
        for k in range(per_entity):
            n = len(rows)
            bad = bad_every and n % bad_every == bad_every - 1
            cells = [f"e{e:04d}", f"{k * 1.5}", "LAB", "x" if k % 2 else "", f"{k}", f"s{e % 3}"]
            if bad:
                cells[[1, 4, 0, 2][n % 4]] = ["soon", "high", "", ""][n % 4]
            rows.append(cells)
    return rows


def build(ingested: Ingested, out: Path) -> dict[str, bytes]:
    build_corpus(ingested, out, TokenScheme(), SplitConfig(), workers=1)
    return {name: (out / name).read_bytes() for name in CORPUS_FILES}


def test_disjoint_shards_are_source_parts_and_give_the_hashed_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular_parse, "MIN_ROWS_PER_PART", 10)
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard in range(3):
        write_csv(folder / f"p{shard}.csv", shard_rows(shard * 20, 20, 8, bad_every=7))
    ingested = read_tabular([folder], OPTIONS)
    assert [rows for rows, _ in ingested.source_parts] == [160, 160, 160]
    parts = build(ingested, tmp_path / "parts")
    manifest = (tmp_path / "parts" / "manifest.json").read_text()
    assert '"partitions_from": "source"' in manifest
    # The same input as the old pipeline read it: hashed, the checks filtering the rows.
    monkeypatch.setattr(tabular_parse, "MAX_REJECTS_BY_NUMBER", -1)
    hashed = dataclasses.replace(read_tabular([folder], OPTIONS), source_parts=())
    assert build(hashed, tmp_path / "hashed") == parts
    rejects = pl.read_parquet(tmp_path / "parts" / "rejects.parquet")
    assert {"time is not a number", "value is not a number", "entity is missing"} <= set(
        rejects["reason"]
    )
    assert rejects.filter(pl.col("row") < 2).height == 0  # line 1 is the header
    assert ingested.rows_read == 480 == rejects.height + ingested.events.collect().height


def test_overlapping_or_small_files_take_the_hash_path(tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_csv(folder / "a.csv", shard_rows(0, 10, 5))
    write_csv(folder / "b.csv", shard_rows(5, 10, 5))  # entities 5-9 in both files
    monkeypatch.setattr(tabular_parse, "MIN_ROWS_PER_PART", 1)
    assert read_tabular([folder], OPTIONS).source_parts == ()
    write_csv(folder / "b.csv", shard_rows(10, 10, 5))
    assert len(read_tabular([folder], OPTIONS).source_parts) == 2
    # Tiny files on average (here 50 rows a file) are hashed: a scan per file costs more.
    monkeypatch.setattr(tabular_parse, "MIN_ROWS_PER_PART", 51)
    assert read_tabular([folder], OPTIONS).source_parts == ()


def test_disjoint_files_rule():
    spans = [FileRange(10, "a", "c"), FileRange(10, "d", "f"), FileRange(5)]
    assert disjoint_files(spans, 15_000)
    assert not disjoint_files(spans, 14_999)  # under 5,000 rows a file on average
    assert not disjoint_files([FileRange(10, "a", "d"), FileRange(10, "d", "f")], 20_000)
    assert not disjoint_files([FileRange(10, "a", "c")], 20_000)  # one file: nothing to gain


def test_unreadable_file_in_a_folder_is_named(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_csv(folder / "a.csv", shard_rows(0, 3, 3))
    (folder / "b.csv").write_text("who,t,c1,c2,v,site\ne9,1,x,y,2,s\ne9,2,x,y,2,s,extra\n")
    write_csv(folder / "c.csv", shard_rows(10, 3, 3))
    with pytest.raises(InputError) as info:
        read_tabular([folder], OPTIONS)
    assert info.value.file == str(folder / "b.csv")


def test_unreadable_file_is_one_line_and_exit_2(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_csv(folder / "a.csv", shard_rows(0, 3, 3))
    (folder / "b.csv").write_bytes(b"who,t,c1,c2,v,site\ne9,1,\xff\xfe,y,2,s\n")
    result = run_seqlm(
        "ingest", "tabular", str(folder), "--out", str(tmp_path / "c"),
        "--option", "entity=who", "--option", "code=c1", "--option", "time=t",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "b.csv" in lines[0], result.stderr
    assert not (tmp_path / "c").exists()


CELLS = st.sampled_from(["1", "2.5", "-3", "", "NA", "x", "inf", "nan", " 4 ", "1e400"])


@st.composite
def shard_sets(draw):
    """Up to four CSV files as rows; entities per file drawn from disjoint or shared pools."""
    shared = draw(st.booleans())
    files = []
    for f in range(draw(st.integers(1, 4))):
        pool = [f"e{k}" for k in range(3)] if shared else [f"f{f}e{k}" for k in range(3)]
        n = draw(st.integers(0, 12))
        rows = [
            [
                draw(st.sampled_from([*pool, "", "NA"])),
                draw(CELLS),
                draw(st.sampled_from(["A", "B", ""])),
                draw(st.sampled_from(["x", "", "NA"])),
                draw(CELLS),
                "s",
            ]
            for _ in range(n)
        ]
        files.append(rows)
    return files


def shared_pool(files: list[list[list]]) -> bool:
    return any(row[0].startswith("e") for rows in files for row in rows)


def rows_of(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.rows(), key=repr)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=shard_sets())
def test_one_pass_matches_each_file_read_alone_and_the_checks(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("pass")
    paths = [write_csv(folder / f"p{i}.csv", rows) for i, rows in enumerate(files)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tabular_parse, "MIN_ROWS_PER_PART", 1)
        ingested = read_tabular([folder], OPTIONS)
        events = ingested.events.collect()
        rejects = ingested.rejects.to_frame()
        assert ingested.rows_read == sum(len(rows) for rows in files)
        assert ingested.rows_read == events.height + rejects.height
        # The events equal the old plan's: rows filtered by the checks, not by number.
        patch.setattr(tabular_parse, "MAX_REJECTS_BY_NUMBER", -1)
        assert read_tabular([folder], OPTIONS).events.collect().equals(events)
    # Each file's rejects (rows numbered in its own file) as when it is read alone.
    for path in paths:
        alone = read_tabular([path], OPTIONS).rejects.to_frame()
        assert rows_of(rejects.filter(pl.col("file") == str(path))) == rows_of(alone)
    kept = [set(read_tabular([p], OPTIONS).events.collect()["entity"]) for p in paths]
    overlap = any(a & b for i, a in enumerate(kept) for b in kept[i + 1 :])
    if overlap:
        assert ingested.source_parts == ()
    spread = sum(map(bool, kept)) > 1 and ingested.rows_read >= len(files)
    if not shared_pool(files) and spread:
        assert ingested.source_parts
    if ingested.source_parts:
        parts = pl.concat([frame.collect() for _, frame in ingested.source_parts])
        assert rows_of(parts) == rows_of(ingested.events.unsorted.collect())
        assert [rows for rows, _ in ingested.source_parts] == [len(r) for r in files]
