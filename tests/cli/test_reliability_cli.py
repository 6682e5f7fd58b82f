"""Issue 14, classes 1, 2, 8, 9 and 11, through the CLI as a user runs it (a subprocess):
the exit code, stderr that is one line, and never a traceback. Each class has at least
two subprocess cases; further cases run the same `main` in this process (`in_process`),
which is the same code path without paying for an interpreter start-up each time.

1. `--overwrite` replaces only a seqlm output, never the inputs or a user's folder;
2. one writer per output folder (a lock naming its holder; a dead holder's lock is stale);
8. every failure a user can cause is one line, exit 2;
9. staging folders a killed command left are removed at the next run into that folder;
11. small ones: file modes follow the umask, no local paths in exports, counts that are
   not recorded say so, one-line warnings, labels that spell scheme tokens counted.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers.cli_helpers import run
from helpers.reliability_helpers import (
    BIRD1,
    MEDS_SHARD,
    assert_one_line_error,
    in_process,
    manifest_counts,
    message_lines,
    seqlm,
)

TINY = [
    "--preset", "tiny",
    "--set", "model.context=16",
    "--set", "train.steps=6",
    "--set", "train.batch=2",
    "--set", "train.eval_every=3",
    "--set", "train.checkpoint_every=3",
]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A corpus and a short run from the bird1 fixture, written once for the module."""
    root = tmp_path_factory.mktemp("reliability")
    corpus, run_folder = root / "corpus", root / "run"
    assert run(["ingest", "crowsetta-generic-seq", str(BIRD1), "--out", str(corpus)]) == 0
    assert run(["train", str(corpus), "--out", str(run_folder), *TINY]) == 0
    return {"corpus": corpus, "run": run_folder}


def _ingest(source: Path, out: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return seqlm(["ingest", "crowsetta-generic-seq", source, "--out", out, *extra], **kwargs)


def _ingest_here(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return in_process(["ingest", "crowsetta-generic-seq", source, "--out", out, *extra])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- 1. --overwrite replaces only a seqlm output ------------------------------------------


def test_overwrite_refuses_a_users_folder_and_keeps_its_files(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    result = _ingest(BIRD1, folder, "--overwrite")
    assert_one_line_error(result, "not a folder seqlm wrote")
    assert (folder / "chapter1.tex").read_text() == "precious"


def test_overwrite_refuses_the_folder_holding_the_inputs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = data / "bird1.csv"
    shutil.copy(BIRD1, source)
    assert_one_line_error(_ingest(source, data, "--overwrite"), "input")
    assert_one_line_error(_ingest_here(source, tmp_path, "--overwrite"), "input")  # a parent
    link = tmp_path / "link"
    link.symlink_to(data)  # a symlink to it is the same folder
    assert_one_line_error(_ingest_here(source, link, "--overwrite"), "input")
    assert source.read_bytes() == BIRD1.read_bytes()


def test_overwrite_refuses_a_seqlm_corpus_holding_a_users_file(built, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(built["corpus"], corpus)
    (corpus / "notes.txt").write_text("mine")
    assert_one_line_error(_ingest_here(BIRD1, corpus, "--overwrite"), "notes.txt")
    assert (corpus / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_seqlm_output_of_another_kind(built, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(built["run"], run_copy)
    assert_one_line_error(_ingest_here(BIRD1, run_copy, "--overwrite"), "did not write")
    assert (run_copy / "model.safetensors").is_file()


def test_subset_cannot_replace_a_folder_above_its_source(built, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(built["corpus"], project / "corpus")
    result = seqlm(
        ["subset", project / "corpus", "--where", "split=train", "--out", project, "--overwrite"]
    )
    assert_one_line_error(result, "input")
    assert (project / "corpus" / "tokens.bin").is_file()


def test_overwrite_replaces_a_seqlm_corpus(built, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(built["corpus"], corpus)
    (corpus / "tokens.bin").write_bytes(b"\x00\x00")  # a damaged corpus of ours
    result = _ingest_here(BIRD1, corpus, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (corpus / "tokens.bin").read_bytes() == (built["corpus"] / "tokens.bin").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_quickstart_and_train_refuse_a_users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n")
    assert_one_line_error(in_process(["quickstart", "--out", folder, "--overwrite"]), "seqlm")
    assert_one_line_error(in_process(["train", BIRD1.parent, "--out", folder]), "not a seqlm")
    assert (folder / "data.csv").read_text() == "a,b\n"


def test_single_output_files_replace_only_what_seqlm_wrote(built, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    result = seqlm(["calibrate", built["corpus"], "--out", notes])
    assert_one_line_error(result, "seqlm did not write it")
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # a PNG matplotlib did not draw
    result = in_process(["runs", "show", built["run"], "--plot", photo])
    assert_one_line_error(result, "seqlm did not write it")
    assert notes.read_text() == "mine" and photo.read_bytes().endswith(bytes(64))
    for _ in range(2):  # its own figure is replaced
        assert (
            in_process(["runs", "show", built["run"], "--plot", tmp_path / "loss.png"]).returncode
            == 0
        )


# -- 2. one writer per output --------------------------------------------------------------

HOLDER = """
import sys, time
from seqlm.outputs import output_lock
with output_lock(sys.argv[1], "test holder"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_lock():
    """Hold the lock of a path from another live process; yields its pid."""
    children = []

    def hold(out: Path) -> int:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "held"
        children.append(child)
        return child.pid

    yield hold
    for child in children:
        child.kill()
        child.wait()


def test_a_second_writer_is_refused_naming_the_holder(built, tmp_path, held_lock):
    host = socket.gethostname()
    corpus_out = tmp_path / "corpus"
    pid = held_lock(corpus_out)
    assert_one_line_error(_ingest(BIRD1, corpus_out), f"pid {pid} on {host}", "test holder")
    assert not corpus_out.exists()
    run_out = tmp_path / "run"
    pid = held_lock(run_out)
    result = in_process(["train", built["corpus"], "--out", run_out, *TINY])
    assert_one_line_error(result, f"pid {pid}")
    eval_out = tmp_path / "eval"
    pid = held_lock(eval_out)
    result = in_process(["eval", built["run"], "--corpus", built["corpus"], "--out", eval_out])
    assert_one_line_error(result, f"pid {pid}")


def test_a_dead_writers_lock_is_taken_over(tmp_path):
    out = tmp_path / "corpus"
    lock = tmp_path / ".corpus.seqlm-lock"
    pid = _dead_pid()
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "x"}))
    result = _ingest(BIRD1, out)
    assert result.returncode == 0, result.stderr
    assert f"stale lock of `x` pid {pid}" in result.stderr
    assert not lock.exists() and (out / "manifest.json").is_file()


# -- 8. one line, never a traceback --------------------------------------------------------


def test_usage_errors_are_one_line(tmp_path):
    assert_one_line_error(seqlm(["train"], cwd=tmp_path), "Missing argument")
    bogus = ["ingest", "crowsetta-generic-seq", "x.csv", "--out", "c", "--bogus"]
    assert_one_line_error(seqlm(bogus, cwd=tmp_path), "--bogus")
    assert_one_line_error(in_process(["no-such-command"]), "no-such-command")
    assert_one_line_error(in_process(["corpus", "info"]), "Missing argument")
    assert_one_line_error(in_process(["train", "c", "--out", "r", "--nproc", "x"]), "nproc")
    bad_set = ["train", "nowhere", "--out", "r", "--set", "train.steps=many"]
    assert_one_line_error(in_process(bad_set), "max_steps")


def _damaged_copy(built: dict[str, Path], tmp_path: Path, name: str) -> Path:
    kind = "run" if name.endswith((".pt", ".safetensors", "state.json")) else "corpus"
    copy = tmp_path / kind
    shutil.copytree(built[kind], copy)
    return copy


def test_damaged_corpus_files_are_one_line(built, tmp_path):
    corpus = _damaged_copy(built, tmp_path, "index.parquet")
    index = corpus / "index.parquet"
    good = index.read_bytes()
    index.write_bytes(good[: len(good) // 2])  # truncated
    assert_one_line_error(seqlm(["corpus", "info", corpus]), "index.parquet")
    index.write_bytes(good[:100] + bytes(200) + good[300:])  # garbled pages
    assert_one_line_error(in_process(["corpus", "info", corpus]), "index.parquet")
    index.write_bytes(good)
    (corpus / "rejects.parquet").write_bytes(os.urandom(64))
    assert_one_line_error(in_process(["corpus", "info", corpus]), "rejects.parquet")
    tokenizer = json.loads((corpus / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    del vocab[next(t for t in vocab if not t.startswith("["))]
    (corpus / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert_one_line_error(seqlm(["corpus", "info", corpus]), "tokenizer.json")
    result = in_process(["train", corpus, "--out", tmp_path / "run2", *TINY])
    assert_one_line_error(result, "tokenizer.json")


def test_damaged_checkpoint_files_are_one_line(built, tmp_path):
    run_copy = _damaged_copy(built, tmp_path, "optimizer.pt")
    latest = sorted((run_copy / "checkpoints").iterdir())[-1]
    (latest / "optimizer.pt").write_bytes(os.urandom(300))
    resume = ["train", built["corpus"], "--out", run_copy, "--resume"]
    assert_one_line_error(seqlm(resume), "optimizer.pt")
    (latest / "optimizer.pt").write_bytes(b"")
    assert_one_line_error(in_process(resume), "optimizer.pt")
    (latest / "model.safetensors").write_bytes(b"{not safetensors")
    assert_one_line_error(in_process(resume), "model.safetensors")


def test_an_existing_file_as_output_is_one_line(built, tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    corpus, run_folder = built["corpus"], built["run"]
    commands = [
        ["ingest", "crowsetta-generic-seq", BIRD1, "--out", file],
        ["train", corpus, "--out", file, *TINY],
        ["eval", run_folder, "--corpus", corpus, "--out", file],
        ["export", run_folder, "--out", file],
        ["subset", corpus, "--where", "split=train", "--out", file],
        ["runs", "show", run_folder, "--plot", tmp_path],
    ]
    for i, args in enumerate(commands):
        result = seqlm(args) if i < 2 else in_process(args)
        assert_one_line_error(result, str(tmp_path))
    assert file.read_text() == "x"


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_naming_the_output(built, tmp_path):
    """RLIMIT_FSIZE makes writes past the limit fail as a full disk does (EFBIG)."""
    result = _ingest(BIRD1, tmp_path / "corpus", preexec_fn=_file_size_limit(1500))
    assert_one_line_error(result, str(tmp_path / "corpus"))
    assert not (tmp_path / "corpus").exists()
    run_out = tmp_path / "run"
    result = seqlm(
        ["train", built["corpus"], "--out", run_out, *TINY], preexec_fn=_file_size_limit(9000)
    )
    assert_one_line_error(result, str(run_out))


def test_an_unwritable_place_is_one_line(tmp_path):
    assert_one_line_error(_ingest(BIRD1, Path("/proc/seqlm-corpus")), "/proc")
    assert_one_line_error(_ingest_here(BIRD1, Path("/proc/none/corpus")), "/proc/none")


def _labelled_copy(tmp_path: Path, labels: list[str]) -> Path:
    """bird1.csv with its labels replaced, cycling through `labels`."""
    frame = pl.read_csv(BIRD1)
    column = [labels[i % len(labels)] for i in range(frame.height)]
    path = tmp_path / "labelled.csv"
    frame.with_columns(pl.Series("label", column)).write_csv(path)
    return path


def test_labels_matplotlib_would_parse_as_tex_are_drawn(tmp_path):
    source = _labelled_copy(tmp_path, ["$\\frac{$", "a", "$x", "b", "^_$", "c"])
    corpus, run_out = tmp_path / "corpus", tmp_path / "run"
    assert run(["ingest", "crowsetta-generic-seq", str(source), "--out", str(corpus)]) == 0
    assert run(["train", str(corpus), "--out", str(run_out), *TINY]) == 0
    maps = seqlm(
        ["attention", "maps", run_out, "--corpus", corpus, "--seq", "0", "--length", "12",
         "--layers", "0", "--heads", "0", "--out", tmp_path / "maps"]
    )  # fmt: skip
    assert maps.returncode == 0, maps.stderr
    evaluation = in_process(["eval", run_out, "--corpus", corpus, "--baselines", "unigram"])
    assert evaluation.returncode == 0, evaluation.stderr
    assert "Traceback" not in maps.stderr + evaluation.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = seqlm(["corpus", "info", tmp_path / "none", "--debug"])
    assert result.returncode != 0 and "Traceback" in result.stderr


# -- 9. kills leave nothing behind ----------------------------------------------------------


def _staging(parent: Path, name: str, pid: int, host: str | None = None) -> Path:
    folder = parent / f".{name}.partial-{pid}-0123abcd"
    folder.mkdir()
    (folder / "tokens.bin").write_bytes(b"\x00" * 10)
    owner = {"pid": pid, "host": host or socket.gethostname()}
    (folder / ".seqlm-staging.json").write_text(json.dumps(owner))
    return folder


def test_stale_staging_folders_are_removed_and_reported(tmp_path):
    dead = _dead_pid()
    same = _staging(tmp_path, "corpus", dead)
    other = _staging(tmp_path, "older", dead)  # another output's, same parent
    live = _staging(tmp_path, "busy", os.getpid())  # a running process's: kept
    remote = _staging(tmp_path, "remote", dead, host="another-host")  # cannot tell: kept
    legacy = tmp_path / ".legacy.partial-0123456789ab"  # no pid in the name: kept
    legacy.mkdir()
    result = _ingest(BIRD1, tmp_path / "corpus")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and all(f"process {dead}" in n for n in notes), result.stderr
    assert not same.exists() and not other.exists()
    assert live.exists() and remote.exists() and legacy.exists()


def test_a_killed_ingest_is_cleaned_up_by_the_next(tmp_path):
    from seqlm.datasets import finch_lesions_path

    inputs = sorted(p for p in finch_lesions_path().iterdir() if p.name.startswith("bird"))
    out = tmp_path / "corpus"
    command = [sys.executable, "-m", "seqlm", "ingest", "birdsong-strings", *inputs]
    child = subprocess.Popen([*command, "--out", str(out)], stderr=subprocess.DEVNULL)
    try:
        while child.poll() is None and not list(tmp_path.glob(".corpus.partial-*/tokens.bin")):
            pass  # wait until it writes its tokens, then kill it mid-way
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = list(tmp_path.glob(".corpus.partial-*"))
    if not left:
        pytest.skip("the ingest finished before it could be killed")
    result = _ingest(BIRD1, tmp_path / "next")
    assert result.returncode == 0, result.stderr
    assert f"process {child.pid}" in result.stderr
    assert not any(p.exists() for p in left) and not out.exists()


# -- 11. small ones -------------------------------------------------------------------------


def test_weights_follow_the_umask_and_exports_hold_no_local_path(built, tmp_path):
    for path in [built["run"] / "model.safetensors", *built["run"].rglob("*.safetensors")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path
    out = tmp_path / "hf"
    result = seqlm(["export", built["run"], "--out", out], preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o640
    text = (out / "config.json").read_text()
    assert str(built["run"].resolve()) not in text and str(built["run"]) not in text
    assert str(tmp_path) not in text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_counts_missing_from_a_manifest_are_not_reported_as_balanced(built, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(built["corpus"], corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    for key in ("rows_read", "rejects"):
        del manifest["counts"][key]
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    result = seqlm(["corpus", "info", corpus])
    assert result.returncode == 0, result.stderr
    assert "(not recorded)" in result.stdout and "(ok)" not in result.stdout
    del manifest["counts"]
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    shown = in_process(["corpus", "info", corpus, "--json"])
    assert json.loads(shown.stdout)["rows_read"] is None


def test_meds_metadata_warning_is_one_line(tmp_path):
    root = tmp_path / "meds"
    (root / "data" / "train").mkdir(parents=True)
    shutil.copy(MEDS_SHARD, root / "data" / "train" / "0.parquet")
    (root / "metadata").mkdir()
    pl.DataFrame({"code": ["MEDS_BIRTH"], "description": ["birth"]}).write_parquet(
        root / "metadata" / "codes.parquet"
    )
    result = seqlm(["ingest", "meds", root, "--out", tmp_path / "corpus"])
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: "), result.stderr
    assert "codes.parquet" in lines[0] and "Warning" not in lines[0]


def test_labels_that_spell_scheme_tokens_keep_tokens_of_their_own(tmp_path):
    # Labels that spell scheme tokens are escaped reversibly (issue 14, class 6), so none
    # is merged into an unknown: the manifest's reserved_labels count stays 0 and every
    # look-alike has its own token, distinct from the real special token.
    labels = ["[PAD]", "a", "VALUE//Q3", "b", "[BOS]", "c", "syllable//[UNK]", "d", "[TIME//5m"]
    source = _labelled_copy(tmp_path, labels)
    result = _ingest_here(source, tmp_path / "corpus")
    assert result.returncode == 0, result.stderr
    assert manifest_counts(tmp_path / "corpus")["reserved_labels"] == 0
    vocab = json.loads((tmp_path / "corpus" / "tokenizer.json").read_text())["model"]["vocab"]
    data_tokens = set(vocab) - {"[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]"}
    assert len(data_tokens) >= len(labels)  # one token per distinct label, none merged
    assert not data_tokens & {"[PAD]", "[BOS]", "VALUE//Q3", "[TIME//5m"}
    shown = seqlm(["corpus", "info", tmp_path / "corpus"])
    assert "spells a scheme token" not in shown.stdout
    assert message_lines(shown.stderr) == []
