"""Checksums of the files seqlm writes, so a changed or corrupted artefact is caught.

Writers record `file_record(path)` (size, modification time, sha256) beside the
artefact: a corpus in `manifest.json["files"]`, a checkpoint in its `state.json`
`["files"]`. Readers call `verify_file`: by default a fast path (size and modification
time as recorded: the file is as seqlm left it) with the full hash only when the time
differs (a copy); with full verification (`seqlm --verify ...`, or `SEQLM_VERIFY=1`)
every file is re-hashed, so a 1 GB corpus is not re-read on every `corpus info` unless
asked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from seqlm.errors import CorpusError

VERIFY_ENV = "SEQLM_VERIFY"
_CHUNK = 1 << 22  # 4 MiB reads: hashing speed without holding the file in memory


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What `verify_file` checks later: size, modification time (ns) and sha256."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_of(path)}


def record_files(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Records of the named files that exist in `folder`."""
    return {name: file_record(folder / name) for name in names if (folder / name).is_file()}


def full_verification() -> bool:
    """Whether the user asked for every file to be re-hashed (`--verify`)."""
    return os.environ.get(VERIFY_ENV, "") not in ("", "0")


def verify_file(
    path: Path, record: Mapping[str, Any], where: Path, full: bool | None = None
) -> None:
    """Raise CorpusError if `path` is missing or differs from its record (kept in `where`)."""
    if not isinstance(record, Mapping) or "sha256" not in record:
        raise CorpusError(f"{where}: malformed checksum record for {path.name}")
    if not path.is_file():
        raise CorpusError(f"{path}: missing (listed with a checksum in {where})")
    stat = path.stat()
    changed = f"{path}: does not match the checksum recorded in {where}"
    if stat.st_size != record.get("size"):
        raise CorpusError(
            f"{changed} (size {stat.st_size} bytes, recorded {record.get('size')}): "
            "the file was changed or truncated after seqlm wrote it"
        )
    full = full_verification() if full is None else full
    if not full and stat.st_mtime_ns == record.get("mtime_ns"):
        return
    if sha256_of(path) != record["sha256"]:
        raise CorpusError(f"{changed}: the file was changed or corrupted after seqlm wrote it")


def verify_recorded(folder: Path, files: Mapping[str, Any], where: Path) -> None:
    """`verify_file` for every file a record lists (names relative to `folder`)."""
    if not isinstance(files, Mapping):
        raise CorpusError(f"{where}: malformed 'files' checksums")
    for name, record in files.items():
        if Path(name).name != name:  # only files beside the record, never a path elsewhere
            raise CorpusError(f"{where}: checksum entry {name!r} is not a file name")
        verify_file(folder / name, record, where)
