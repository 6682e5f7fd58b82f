"""`seqlm.outputs`: the rules every writer shares (locks, overwrite, staging)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from seqlm.outputs import (
    MARKER_FILE,
    OutputError,
    OutputNotice,
    check_output,
    clean_stale_staging,
    lock_path,
    move_into_place,
    new_staging,
    output_kind,
    output_lock,
    write_marker,
)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_output_kind_reads_what_seqlm_writes(tmp_path):
    assert output_kind(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "seqlm-corpus/1"}))
    assert output_kind(tmp_path) == "corpus"
    (tmp_path / "manifest.json").write_text("{broken")
    assert output_kind(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"seqlm_version": "0", "model_type": "gpt"}))
    assert output_kind(tmp_path) == "run"
    write_marker(tmp_path, "quickstart")
    assert output_kind(tmp_path) == "quickstart"


def test_check_output_rules(tmp_path):
    source = tmp_path / "in" / "a.csv"
    source.parent.mkdir()
    source.write_text("x")
    check_output(tmp_path / "new", [source])  # a new folder: fine
    with pytest.raises(OutputError, match="is this command's input"):
        check_output(source.parent, [source.parent], overwrite=True)
    with pytest.raises(OutputError, match="holds this command's input"):
        check_output(tmp_path, [source], overwrite=True)
    with pytest.raises(OutputError, match="not a folder"):
        check_output(source, [])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("1")
    with pytest.raises(OutputError, match="not empty"):
        check_output(mine)
    with pytest.raises(OutputError, match="not a folder seqlm wrote"):
        check_output(mine, overwrite=True)
    write_marker(mine, "test")
    with pytest.raises(OutputError, match=r"did not write \(x\)"):
        check_output(mine, overwrite=True, own_names=["y"])
    check_output(mine, overwrite=True, own_names=["x"])


def test_lock_is_reentrant_in_a_process_and_removed_after(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, "outer"):
        assert json.loads(lock_path(out).read_text())["command"] == "outer"
        with output_lock(out, "inner"):  # ingest -> build_corpus
            pass
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_lock_held_by_another_process_is_refused(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from seqlm.outputs import output_lock\n"
         "with output_lock(sys.argv[1], 'holder'):\n"
         "    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"`holder` pid {holder.pid}"), output_lock(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(OutputNotice, match="stale lock"), output_lock(out):
        pass  # the killed holder's lock file is left, but its lock is free again


def test_staging_of_dead_processes_is_removed_with_a_notice(tmp_path):
    mine = new_staging(tmp_path / "corpus")
    dead = tmp_path / f".corpus.partial-{_dead_pid()}-abcdef01"
    dead.mkdir()
    old = tmp_path / f".corpus.old-{_dead_pid()}-abcdef02"
    old.mkdir()
    with pytest.warns(OutputNotice, match="no longer running"):
        removed = clean_stale_staging(tmp_path)
    assert sorted(removed) == sorted([dead, old])
    assert mine.exists()


def test_move_into_place_never_replaces_a_folder_that_appeared(tmp_path):
    out = tmp_path / "corpus"
    staging = new_staging(out)
    (staging / "manifest.json").write_text(json.dumps({"format": "seqlm-corpus/1"}))
    out.mkdir()
    (out / "theirs.txt").write_text("keep")
    with pytest.raises(OutputError, match="appeared while"):
        move_into_place(staging, out, overwrite=False)
    with pytest.raises(OutputError, match="not a folder seqlm wrote"):
        move_into_place(staging, out, overwrite=True)
    assert (out / "theirs.txt").read_text() == "keep"
    (out / "theirs.txt").unlink()
    os.rmdir(out)
    move_into_place(staging, out, overwrite=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert MARKER_FILE not in os.listdir(out)
