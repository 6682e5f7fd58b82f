"""Issue 14 class 7: bounded memory on hostile files.

A file that inflates far beyond its size (a zlib bomb inside a `.not.mat`, a Parquet
file declaring tens of millions of run-length-encoded rows, XML entity expansion) is
refused with one line before the parser inflates it; peak memory stays near that of
reading a normal file. Through the CLI, with the child's peak memory measured.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
from helpers.data_cli import assert_one_line_error, seqlm_peak_memory

# Peak memory allowed above a normal run of the same command (imports dominate both).
HEADROOM_MIB = 120


def _mat_bomb(path: Path, inflated_mib: int) -> Path:
    """A MAT v5 file: a 128-byte header and one miCOMPRESSED element that inflates to a
    `inflated_mib` MiB miMATRIX of zeros (what the issue's 778 KB file did)."""
    packer = zlib.compressobj(9)
    inner = struct.pack("<II", 14, inflated_mib * (1 << 20))  # miMATRIX tag, huge
    pieces = [packer.compress(inner)]
    zeros = bytes(1 << 20)
    pieces += [packer.compress(zeros) for _ in range(inflated_mib)]
    pieces.append(packer.flush())
    body = b"".join(pieces)
    header = b"MATLAB 5.0 MAT-file, hostile".ljust(116) + bytes(8) + struct.pack("<H", 0x0100)
    path.write_bytes(header + b"IM" + struct.pack("<II", 15, len(body)) + body)
    return path


def _normal_notmat(path: Path) -> Path:
    scipy.io.savemat(
        path,
        {"onsets": np.array([10.0, 200.0]), "offsets": np.array([90.0, 260.0]), "labels": "ab"},
        do_compression=True,
    )
    return path


@pytest.mark.parametrize("inflated_mib", [pytest.param(300, marks=pytest.mark.slow), 700])
def test_mat_zlib_bomb_is_refused_in_bounded_memory(tmp_path: Path, inflated_mib: int):
    normal = _normal_notmat(tmp_path / "song.cbin.not.mat")
    baseline, base_mib = seqlm_peak_memory(
        "ingest", "notmat", normal, "--out", tmp_path / "c0", out=tmp_path / "run0"
    )
    assert baseline.returncode == 0, baseline.stderr
    bomb = _mat_bomb(tmp_path / "bomb.cbin.not.mat", inflated_mib)
    assert bomb.stat().st_size < 800_000  # under a megabyte on disk
    result, peak_mib = seqlm_peak_memory(
        "ingest", "notmat", bomb, "--out", tmp_path / "c1", out=tmp_path / "run1"
    )
    assert_one_line_error(result, "bomb.cbin.not.mat", "expands to more than")
    assert peak_mib < base_mib + HEADROOM_MIB, (peak_mib, base_mib)


def _parquet_bomb(path: Path, rows: int) -> Path:
    """Three constant columns, dictionary- and run-length-encoded: tiny on disk."""
    indices = pa.array(np.zeros(rows, dtype=np.int8))
    entity = pa.DictionaryArray.from_arrays(indices, pa.array(["e0"]))
    code = pa.DictionaryArray.from_arrays(indices, pa.array(["c"]))
    time = pa.DictionaryArray.from_arrays(indices, pa.array([1.0]))
    pq.write_table(pa.table({"entity": entity, "time": time, "code": code}), path)
    return path


MAPPING = ["-O", 'entity="entity"', "-O", 'time="time"', "-O", 'code="code"']


@pytest.mark.parametrize("rows", [pytest.param(20_000_000, marks=pytest.mark.slow), 40_000_000])
def test_parquet_row_bomb_is_refused_in_bounded_memory(tmp_path: Path, rows: int):
    normal = _parquet_bomb(tmp_path / "normal.parquet", 1_000)
    baseline, base_mib = seqlm_peak_memory(
        "ingest", "tabular", normal, "--out", tmp_path / "c0", *MAPPING, out=tmp_path / "run0"
    )
    assert baseline.returncode == 0, baseline.stderr
    bomb = _parquet_bomb(tmp_path / "bomb.parquet", rows)
    assert bomb.stat().st_size < 2_000_000
    result, peak_mib = seqlm_peak_memory(
        "ingest", "tabular", bomb, "--out", tmp_path / "c", *MAPPING, out=tmp_path / "run"
    )
    assert_one_line_error(result, "bomb.parquet", f"declares {rows:,} rows")
    # Inflated, 20M rows of three columns take over 400 MiB; imports dominate a normal run.
    assert peak_mib < base_mib + HEADROOM_MIB, (peak_mib, base_mib)


@pytest.mark.parametrize(
    "doctype",
    [
        # billion laughs
        '<!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>',
        # an external entity (never fetched, refused all the same)
        '<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ],
)
def test_xml_entity_declarations_are_refused(tmp_path: Path, doctype: str):
    xml = tmp_path / "Annotation.xml"
    body = "<Sequence><Position>0</Position><Length>10</Length><NumNote>1</NumNote>"
    body += "<Note><Position>0</Position><Length>5</Length><Label>&d;</Label></Note></Sequence>"
    xml.write_text(f'<?xml version="1.0"?>\n{doctype}\n<AnnotationSequences>{body}'
                   "</AnnotationSequences>\n")  # fmt: skip
    result, _ = seqlm_peak_memory(
        "ingest", "koumura-xml", xml, "--out", tmp_path / "c", out=tmp_path / "run"
    )
    assert_one_line_error(result, "Annotation.xml", "entity declarations are not allowed")
