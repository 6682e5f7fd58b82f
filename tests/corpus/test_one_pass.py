"""The one-pass corpus build (issue 17) against the old builder it replaced: the same
bytes on real data, whatever the partition count or the number of worker processes;
stage timings in the manifest; nothing left behind by a failure or a kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from helpers.corpus_helpers import clinic_frame, ingested, lesion_frame
from helpers.reference_writer import reference_build
from helpers.shared_data import shared_path

import seqlm.corpus.partitions as partitions
import seqlm.corpus.workers as corpus_workers
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions
from seqlm.corpus import SplitConfig, build_corpus
from seqlm.ingest import ingest
from seqlm.vocabularies import TokenScheme

COMPARED = ("tokens.bin", "times.bin", "index.parquet", "tokenizer.json", "scheme.json")
CLINIC_SCHEME = TokenScheme(
    value_bins=4, min_values_per_bin=2, time_tokens=True, time_gap_edges=("15m", "1h", "1d")
)


def assert_same_files(a: Path, b: Path) -> None:
    for name in COMPARED:
        assert (a / name).exists() == (b / name).exists(), name
        if (a / name).exists():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("rows_per_bucket", [500_000, 40, 7])
def test_clinic_corpus_equals_the_old_builder(tmp_path, rows_per_bucket):
    frame = clinic_frame()
    reference = reference_build(
        ingested(frame), tmp_path / "old", CLINIC_SCHEME, SplitConfig(seed=3), rows_per_bucket
    )
    new = build_corpus(
        ingested(frame),
        tmp_path / "new",
        CLINIC_SCHEME,
        SplitConfig(seed=3),
        rows_per_bucket=rows_per_bucket,
    )
    assert_same_files(reference, new.path)
    assert new.manifest["build"]["partitions"] == -(-frame.height // rows_per_bucket)


@pytest.mark.parametrize("workers", [1, 2])
def test_two_level_spill_gives_the_same_corpus(tmp_path, monkeypatch, workers):
    """More partitions than one sink may hold open: spilled into fewer files, then split
    (seqlm.corpus.partitions.SPILL_FILES); the corpus is the old builder's, and no spill
    file is left."""
    monkeypatch.setattr(partitions, "SPILL_FILES", 3)
    frame = clinic_frame(60)
    reference = reference_build(
        ingested(frame), tmp_path / "old", CLINIC_SCHEME, SplitConfig(seed=3), 50
    )
    seen: list[str] = []
    original = partitions.split_spill

    def split_and_record(folder: Path, spill: int) -> None:
        seen.extend(sorted(p.name for p in folder.iterdir()))
        original(folder, spill)

    if workers == 1:  # a worker process would need the function by its module name
        monkeypatch.setattr("seqlm.corpus.sort_stage.split_spill", split_and_record)
    new = build_corpus(
        ingested(frame),
        tmp_path / "new",
        CLINIC_SCHEME,
        SplitConfig(seed=3),
        rows_per_bucket=50,
        workers=workers,
    )
    parts = -(-frame.height // 50)
    assert parts > 3
    assert new.manifest["build"]["partitions"] == parts
    assert new.manifest["build"]["spill_files"] == 3
    assert "splitting spill files" in new.manifest["seconds_per_stage"]
    assert workers == 2 or "_spill" in seen
    assert_same_files(reference, new.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]


def test_finch_corpus_equals_the_old_builder(tmp_path):
    frame = lesion_frame(shared_path("birdsong", "koparkar2024_mman_lesions"))
    splits = SplitConfig(held_out_groups=("bird7",), held_out=0.0, tuning=0.1, by="group")
    events = ingested(frame, ("condition",))
    reference = reference_build(events, tmp_path / "old", TokenScheme(), splits)
    new = build_corpus(events, tmp_path / "new", TokenScheme(), splits, rows_per_bucket=60_000)
    assert new.manifest["build"]["partitions"] > 1
    assert_same_files(reference, new.path)


def read_demo() -> tuple:
    spec = get_adapter("meds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        events = spec.read([shared_path("clinical", "mimic-iv-demo-meds")], MedsOptions())
    return events, TokenScheme(**spec.scheme_defaults)


@pytest.mark.slow
def test_mimic_demo_corpus_equals_the_old_builder(tmp_path):
    events, scheme = read_demo()
    reference = reference_build(events, tmp_path / "old", scheme, SplitConfig())
    new = build_corpus(events, tmp_path / "new", scheme, SplitConfig(), rows_per_bucket=200_000)
    assert new.manifest["build"] == {
        "partitions": 5,
        "partitions_from": "hash",
        "spill_files": 5,
        "workers": 1,
    }
    assert_same_files(reference, new.path)
    seconds = new.manifest["seconds_per_stage"]
    assert set(seconds) >= {"partitioning events", "sorting partitions", "encoding tokens"}
    assert all(s >= 0 for s in seconds.values())


def test_two_workers_give_the_same_corpus_as_one(tmp_path):
    frame = clinic_frame(60)
    one = build_corpus(
        ingested(frame), tmp_path / "one", CLINIC_SCHEME, SplitConfig(), rows_per_bucket=50
    )
    two = build_corpus(
        ingested(frame),
        tmp_path / "two",
        CLINIC_SCHEME,
        SplitConfig(),
        rows_per_bucket=50,
        workers=2,
    )
    assert one.manifest["build"]["workers"] == 1
    assert two.manifest["build"]["workers"] == 2
    assert_same_files(one.path, two.path)


@pytest.mark.slow
def test_ingest_cli_with_two_workers_equals_one(tmp_path):
    """`seqlm ingest meds --workers 2` as a user runs it, against `--workers 1`."""
    demo = shared_path("clinical", "mimic-iv-demo-meds")
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        command = [sys.executable, "-m", "seqlm.cli.app", "ingest", "meds", str(demo)]
        command += ["--out", str(out), "--workers", str(workers)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        outs.append(out)
    assert_same_files(*outs)


def test_a_failing_stage_leaves_no_staging_or_spill_files(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(partitions, "count_partition", fail)
    monkeypatch.setattr("seqlm.corpus.writer.count_partition", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_corpus(
            ingested(clinic_frame()),
            tmp_path / "c",
            CLINIC_SCHEME,
            SplitConfig(),
            rows_per_bucket=9,
        )
    assert list(tmp_path.iterdir()) == []


KILL_SCRIPT = """
import sys, warnings
from seqlm.ingest import ingest
warnings.simplefilter("ignore")
ingest("meds", [sys.argv[1]], sys.argv[2], workers=int(sys.argv[3]))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_build_leaves_no_corpus(tmp_path, workers):
    """SIGKILL while the spill files exist: no corpus folder appears, and everything
    the build wrote is inside its one hidden staging folder (which stale-output cleanup
    removes on the next run)."""
    demo = shared_path("clinical", "mimic-iv-demo-meds")
    out = tmp_path / "corpus"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(demo), str(out), str(workers)],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".corpus.partial-*/_work/*")):
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    # Besides the kernel-released lock file, all it left is its hidden staging folder...
    left = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".seqlm-lock")]
    assert [name.startswith(".corpus.partial-") for name in left] == [True]
    # ...which the next build into the same parent removes (its pid is dead).
    bird1 = Path(__file__).resolve().parents[1] / "fixtures" / "birdsong" / "bird1.csv"
    ingest("crowsetta-generic-seq", [bird1], tmp_path / "next")
    assert not list(tmp_path.glob(".corpus.partial-*"))


def worker_pids(pid: int) -> list[int]:
    """The spawned worker processes among `pid`'s children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in command:
                found.append(int(child))
    return found


def test_workers_leave_when_the_build_is_killed(tmp_path):
    """SIGKILL of the building process alone (not its group): its worker processes
    notice and exit instead of waiting for tasks forever."""
    demo = shared_path("clinical", "mimic-iv-demo-meds")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(demo), str(tmp_path / "corpus"), "2"],
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while len(workers := worker_pids(process.pid)) < 2:
            assert process.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 30
        while any(running(w) for w in workers):
            assert time.monotonic() < deadline, "a worker outlived its build"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether `pid` is alive (an exited process waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class _CountingPool:
    """A stand-in worker pool that runs each task at once and counts the results that
    were submitted but not yet handed to the merge (held by their futures)."""

    _max_workers = 2

    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0

    def submit(self, function, *args):
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(function(*args))
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        return future


def test_run_map_holds_a_bounded_number_of_results_in_task_order():
    pool = _CountingPool()
    seen = []

    def done(i, result):
        pool.held -= 1
        seen.append((i, result))

    corpus_workers.run_map(pool, pow, [(k, 2) for k in range(50)], done)
    assert seen == [(k, k * k) for k in range(50)]
    assert pool.most_held <= corpus_workers.MAP_AHEAD * pool._max_workers
