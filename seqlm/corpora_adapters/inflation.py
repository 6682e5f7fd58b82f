"""Bounded memory on hostile files: what a parser may inflate a file to.

Compressed and encoded formats can expand enormously: a 778 KB `.not.mat` holding a
zlib stream of zeros decompresses to about a gigabyte, and a Parquet file of a few
kilobytes can declare a billion run-length-encoded rows. Before the real parser runs,
each adapter that inflates measures (streaming, in small pieces) or estimates from the
metadata what the file expands to, and refuses it with one line when that exceeds
`inflation_cap(file size)`: a floor plus a multiple of the file's size. Real files sit
far below it (MAT files compress a few times; the MIMIC-IV demo shards decode to about
60 times their size with every column).

XML is covered in its parser: entity declarations are refused (`koumura_xml`), so
no entity expansion can happen at all.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from seqlm.errors import InputError

MiB = 1 << 20
# Any file may inflate to this much whatever its size (small files, big headers).
INFLATION_FLOOR = 16 * MiB
# MAT v5: zlib-compressed variables; real annotation files compress a few times.
MAT_RATIO = 100
# Parquet: columnar encodings legitimately reach 100x on sorted or constant columns.
PARQUET_RATIO = 1000
PARQUET_FLOOR = 256 * MiB
# Decoded bytes assumed per Parquet cell (an int64, a float64, a string view).
PARQUET_CELL_BYTES = 16
_MI_COMPRESSED = 15
_PIECE = MiB  # decompressed bytes produced per step while measuring


def inflation_cap(file_size: int, ratio: int, floor: int = INFLATION_FLOOR) -> int:
    return floor + ratio * file_size


def _refuse(file: Path, size: int, cap: int, ratio: int) -> InputError:
    return InputError(
        f"expands to more than {cap // MiB:,} MiB ({ratio}x its {size:,} bytes plus "
        f"{INFLATION_FLOOR // MiB} MiB); refusing to read it (a damaged or hostile file)",
        file=file,
    )


def _inflated(body: bytes, budget: int) -> int:
    """Bytes a zlib stream decompresses to, counted in pieces; stops past `budget`.
    A broken stream stops the count (the real parser reports it)."""
    inflater = zlib.decompressobj()
    total, pending = 0, body
    try:
        while pending and total <= budget:
            total += len(inflater.decompress(pending, _PIECE))
            pending = inflater.unconsumed_tail
        if total <= budget:
            total += len(inflater.flush())
    except zlib.error:
        pass
    return total


def check_mat_inflation(data: bytes, file: Path) -> None:
    """Refuse a MAT v5 file whose data elements (compressed ones decompressed) exceed
    the cap. Walks the top-level element tags; anything unparsable is left to scipy."""
    cap = inflation_cap(len(data), MAT_RATIO)
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        return  # not v5 (v4 has no compression); scipy decides
    order = "<" if data[126:128] == b"IM" else ">"
    position, total = 128, 0
    while position + 8 <= len(data) and total <= cap:
        kind, size = struct.unpack_from(order + "II", data, position)
        if kind >> 16:  # small data element: tag and up to 4 bytes of data in 8 bytes
            position, total = position + 8, total + 4
            continue
        body = data[position + 8 : position + 8 + size]
        if kind == _MI_COMPRESSED:
            total += _inflated(body, cap - total)
            position += 8 + size
        else:
            total += len(body)
            position += 8 + size + (-size % 8)
    if total > cap:
        raise _refuse(file, len(data), cap, MAT_RATIO)


def check_parquet_inflation(file: Path, rows: int, columns: int) -> None:
    """Refuse a Parquet file whose metadata declares more decoded data than the cap
    (rows x columns read x `PARQUET_CELL_BYTES`)."""
    size = file.stat().st_size
    cap = inflation_cap(size, PARQUET_RATIO, PARQUET_FLOOR)
    if rows * max(columns, 1) * PARQUET_CELL_BYTES > cap:
        raise InputError(
            f"declares {rows:,} rows x {columns} columns, over {cap // MiB:,} MiB decoded "
            f"({PARQUET_RATIO}x its {size:,} bytes plus {PARQUET_FLOOR // MiB} MiB); refusing "
            "to read it (a damaged or hostile file)",
            file=file,
        )
