"""Output folders: who may write one, what `--overwrite` may replace, what a kill leaves.

Every command that writes a folder goes through this module, so the rules are the same
everywhere (docs/reliability.md lists them as promises):

- **One writer per output.** `output_lock(out)` takes an exclusive lock file beside the
  output (`.NAME.seqlm-lock`, holding the holder's pid, host and command). The lock is
  an advisory `flock` on that file, so the kernel frees it when the holder dies: a lock
  file left by a killed process is stale and simply taken over. A second writer gets an
  `OutputError` naming the holder.
- **Overwrite replaces only seqlm outputs.** `check_output` refuses a path that is a
  file, a folder that holds one of the command's inputs (or is one), and, unless
  `overwrite`, any non-empty folder; with `overwrite` only a folder seqlm wrote (a
  corpus manifest, a run's config.json or the output marker says so) holding nothing
  but the names its writer creates.
- **Staging.** Folders are built as `.NAME.partial-PID-HEX` beside the output and
  renamed into place by `move_into_place`, which never replaces a folder that appeared
  meanwhile unless `overwrite`. `clean_stale_staging` removes staging folders whose
  process is gone (same host, pid not running) and says so with an `OutputNotice`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import seqlm
from seqlm.errors import ConfigError, Notice

MARKER_FILE = ".seqlm-output.json"
LOCK_SUFFIX = ".seqlm-lock"
STAGING_OWNER = ".seqlm-staging.json"
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<what>partial|old)-(?P<pid>\d+)-[0-9a-f]+$")
# Locks this process holds: nested calls for the same output (ingest -> build_corpus)
# share the outer lock instead of failing against themselves.
_HELD: dict[str, list[Any]] = {}
_CLAIMED: list[contextlib.AbstractContextManager] = []


class OutputError(ConfigError):
    """An output path cannot be written: locked, foreign, holding inputs, or a file."""


class OutputNotice(Notice):
    """Something seqlm did on the user's disk that they should hear about."""


# -- what seqlm wrote ----------------------------------------------------------------------


def write_marker(folder: str | Path, kind: str) -> None:
    """Mark `folder` as written by seqlm (for outputs with no manifest of their own)."""
    record = {"kind": kind, "seqlm_version": seqlm.__version__, "created": _now()}
    (Path(folder) / MARKER_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")


def output_kind(folder: str | Path) -> str | None:
    """`corpus`, `run`, a marker's kind, or None when nothing says seqlm wrote it."""
    folder = Path(folder)
    marker = _read_json(folder / MARKER_FILE)
    if isinstance(marker.get("kind"), str):
        return marker["kind"]
    manifest = _read_json(folder / "manifest.json")
    if str(manifest.get("format", "")).startswith("seqlm-corpus"):
        return "corpus"
    config = _read_json(folder / "config.json")
    if "seqlm_version" in config and "model_type" in config:
        return "run"
    if {"report", "model_perplexity"} <= set(_read_json(folder / "quickstart.json")):
        return "quickstart"  # written before the marker existed
    return None


def check_run_output(out: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """A run folder is written in place: refuse a file, a folder holding the inputs, and
    a non-empty folder that is not a seqlm run (training would mix into the user's files)."""
    out = Path(out)
    _check_not_file(out)
    check_not_input(out, inputs)
    if out.is_dir() and any(out.iterdir()) and output_kind(out) != "run":
        raise OutputError(
            f"{out}: holds files that are not a seqlm run; name a new or empty folder for --out"
        )


def check_output(
    out: str | Path,
    inputs: Iterable[str | Path] = (),
    *,
    overwrite: bool = False,
    own_names: Iterable[str] | None = None,
) -> None:
    """Raise `OutputError` unless `out` may be (re)written by a command reading `inputs`.

    `own_names` are the top-level names the command's writer creates; with `overwrite`
    a folder holding anything else is refused (it holds the user's files).
    """
    out = Path(out)
    _check_not_file(out)
    check_not_input(out, inputs)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputError(
            f"{out}: output folder exists and is not empty (--overwrite replaces a seqlm output)"
        )
    check_replaceable(out, own_names)


def _check_not_file(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; name a new folder for the output")


def check_not_input(out: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is one of the inputs or a folder above one."""
    target = Path(out).resolve()
    for item in inputs:
        source = Path(item).resolve()
        if source == target or target in source.parents:
            what = "is" if source == target else "holds"
            raise OutputError(
                f"{out}: {what} this command's input {item}; an output cannot replace its "
                "input: write it somewhere else"
            )


def check_replaceable(out: Path, own_names: Iterable[str] | None = None) -> None:
    """Refuse to replace a folder seqlm did not write, or one holding foreign files."""
    if output_kind(out) is None:
        raise OutputError(
            f"{out}: not a folder seqlm wrote (no corpus manifest, run config or "
            f"{MARKER_FILE}); --overwrite only replaces seqlm outputs"
        )
    if own_names is None:
        return
    allowed = {*own_names, MARKER_FILE}
    foreign = sorted(p.name for p in out.iterdir() if not _own_entry(p.name, allowed))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise OutputError(
            f"{out}: holds files seqlm did not write ({shown}); --overwrite only replaces "
            "seqlm outputs: move them or choose another folder"
        )


def output_folder(out: str | Path) -> Path:
    """Create a folder that commands write files into; a file in the way is an error."""
    out = Path(out)
    _check_not_file(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder: {err.strerror}") from None
    return out


def output_file(path: str | Path) -> Path:
    """Check that a single output file may be written: not a folder, and an existing file
    only when seqlm wrote it (a matplotlib PNG, or JSON naming seqlm) — never a user's."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; name a file for the output")
    if path.is_file() and not _written_by_seqlm(path):
        raise OutputError(
            f"{path}: exists and seqlm did not write it; name a new file for the output"
        )
    output_folder(path.parent)
    return path


def _written_by_seqlm(path: Path) -> bool:
    """A figure seqlm drew (matplotlib stamps its PNG header) or a JSON file of ours."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"\x89PNG"):
        return b"Matplotlib" in head
    # lesion.json before it said `written_by` (session 18) opens with its runs and orders
    signatures = (b'"seqlm', b'"train_s_per_token"', b'"ngram_orders"')
    return path.suffix == ".json" and any(mark in head for mark in signatures)


def apply_umask(path: str | Path) -> None:
    """Give a file the mode the user's umask asks for (some writers create 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


# -- one writer per output ---------------------------------------------------------------


def lock_path(out: str | Path) -> Path:
    """`.NAME.seqlm-lock` beside the output, symlinks resolved: two names for one folder
    share one lock."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def output_lock(out: str | Path, command: str = "seqlm") -> Iterator[Path]:
    """Hold the exclusive write lock of `out` for the duration of the block."""
    path = lock_path(out)
    key = str(path)
    if key in _HELD:  # a nested call of the same command in this process
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _HELD[key][1] -= 1
        return
    handle = _acquire(path, Path(out), command)
    _HELD[key] = [handle, 1]
    try:
        yield path
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            path.unlink()  # still locked, so a waiting writer sees a new file next
        handle.close()


def _acquire(path: Path, out: Path, command: str) -> Any:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"{path.parent}: cannot create the output's folder: {err.strerror}"
        ) from None
    for _ in range(20):
        try:
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        except OSError as err:
            raise OutputError(f"{path}: cannot create the lock file: {err.strerror}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(f"{path}: cannot lock: {err.strerror}") from None
            raise OutputError(
                f"{out}: being written by {_describe_holder(path)}; wait for it to finish "
                f"or choose another output (lock {path.name})"
            ) from None
        # The holder we waited on may have unlinked the file before we locked it.
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            handle.close()
            continue
        previous = _read_json(path)
        if previous.get("pid") and _describe(previous) is not None:
            _notice(f"{out}: took over a stale lock of {_describe(previous)} (not running)")
        handle.seek(0)
        handle.truncate()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
        handle.write(json.dumps({**record, "started": _now()}))
        handle.flush()
        return handle
    raise OutputError(f"{path}: could not take the lock (it kept changing hands)")


def _describe_holder(path: Path) -> str:
    holder = _read_json(path)
    return _describe(holder) or "another seqlm process"


def _describe(holder: dict[str, Any]) -> str | None:
    if not holder.get("pid"):
        return None
    command = f"`{holder['command']}` " if holder.get("command") else ""
    return f"{command}pid {holder['pid']} on {holder.get('host', '?')}"


def claim_output(out: str | Path, command: str, *, is_file: bool = False) -> Path:
    """For a CLI command that writes into `out` in place: check it is a folder (or a
    file's path) and hold its lock until `release_claims()` or the process ends."""
    out = output_file(out) if is_file else output_folder(out)
    lock = output_lock(out, command)
    lock.__enter__()
    _CLAIMED.append(lock)
    return out


def release_claims() -> None:
    """Release every lock `claim_output` took (the CLI calls this when a command ends)."""
    while _CLAIMED:
        _CLAIMED.pop().__exit__(None, None, None)


# -- staging folders -----------------------------------------------------------------------


def new_staging(out: str | Path, what: str = "partial") -> Path:
    """A hidden folder beside `out`, named with this process's pid, to build into."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
    (staging / STAGING_OWNER).write_text(json.dumps(owner), encoding="utf-8")
    return staging


def finish_staging(staging: Path) -> None:
    """Drop the owner file before the folder becomes the output."""
    (staging / STAGING_OWNER).unlink(missing_ok=True)


def clean_stale_staging(parent: str | Path) -> list[Path]:
    """Remove `.NAME.partial-PID-*` / `.NAME.old-PID-*` folders of dead processes here."""
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    host = socket.gethostname()
    for entry in sorted(parent.iterdir()):
        match = _STAGING.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        owner = _read_json(entry / STAGING_OWNER)
        pid = int(match["pid"])
        if owner.get("host", host) != host or _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        _notice(f"removed {entry}: left by seqlm process {pid}, which is no longer running")
    return removed


def move_into_place(staging: Path, out: Path, *, overwrite: bool, own_names=None) -> None:
    """Rename the finished `staging` to `out`; an existing `out` is replaced only when
    `overwrite` and it is a seqlm output (it may have appeared while we were writing)."""
    finish_staging(staging)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputError(
                f"{out}: appeared while this command was writing; nothing was replaced "
                "(run again with --overwrite to replace it)"
            )
        if not out.is_dir() or out.is_symlink():
            raise OutputError(f"{out}: exists and is not a folder; nothing was replaced")
        check_replaceable(out, own_names)
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(staging, out)
    except OSError as err:  # a non-empty folder appeared between the check and here
        raise OutputError(
            f"{out}: appeared while this command was writing: {err.strerror}"
        ) from None


def remove_output(out: Path, own_names: Iterable[str] | None = None) -> None:
    """Delete a seqlm output folder in place; refuses one seqlm did not write."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        return
    check_replaceable(out, own_names)
    shutil.rmtree(out)


# -- helpers ---------------------------------------------------------------------------------


def _own_entry(name: str, allowed: set[str]) -> bool:
    """A name the writer creates, or a lock / staging leftover of a seqlm writer."""
    return name in allowed or name.endswith(LOCK_SUFFIX) or _STAGING.match(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _notice(message: str) -> None:
    warnings.warn(message, OutputNotice, stacklevel=3)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
