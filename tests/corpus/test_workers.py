"""The worker processes' environment: polars threads per worker and the allocator
setting (seqlm.corpus.workers), this process's own environment left as it was; tasks
completed when sent; worker processes started ahead, while the adapter reads."""

from __future__ import annotations

import dataclasses
import os
import warnings

from helpers.demo_shards import assert_same_files, small_demo

import seqlm.corpora_adapters.base as adapters_base
import seqlm.corpus.workers as workers_module
import seqlm.corpus.writer as writer
import seqlm.ingest
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.meds import MedsMetadataWarning
from seqlm.corpus.workers import (
    GLIBC_MALLOC_SETTINGS,
    MALLOC_CONF_VARIABLE,
    WORKER_MALLOC_CONF,
    WithLatest,
    run_map,
    started_pool,
    worker_pool,
)
from seqlm.ingest import ingest


def _worker_settings() -> list[str | None]:
    found: list[str | None] = []
    with worker_pool(2) as pool:
        tasks = [(MALLOC_CONF_VARIABLE,), ("POLARS_MAX_THREADS",)]
        run_map(pool, os.getenv, tasks, lambda _, value: found.append(value))
    return found


def test_workers_get_polars_threads_and_the_allocator_setting_last(monkeypatch):
    before = os.environ.get(MALLOC_CONF_VARIABLE)  # polars' defaults, set on import
    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    allocator, threads = _worker_settings()
    # polars appends the inherited setting to its defaults: the last one decides.
    assert allocator is not None and allocator.endswith("," + WORKER_MALLOC_CONF)
    assert threads == str(max(1, (os.cpu_count() or 1) // 2))
    assert os.environ.get(MALLOC_CONF_VARIABLE) == before
    assert "POLARS_MAX_THREADS" not in os.environ


def test_workers_keep_freed_heap_unless_the_user_set_glibc_malloc(monkeypatch):
    """glibc reads its malloc settings from the environment when a process starts: the
    workers get the build's, or the user's own where set, and this process's stay."""
    mmap, trim = GLIBC_MALLOC_SETTINGS
    monkeypatch.delenv(mmap, raising=False)
    monkeypatch.setenv(trim, "12345")
    found: list[str | None] = []
    with worker_pool(2) as pool:
        run_map(pool, os.getenv, [(mmap,), (trim,)], lambda _, value: found.append(value))
    assert found == [GLIBC_MALLOC_SETTINGS[mmap], "12345"]
    assert mmap not in os.environ and os.environ[trim] == "12345"


def test_tasks_with_latest_are_completed_when_they_are_sent():
    """`WithLatest` appends what `latest()` gives at the moment a task is read, so
    a task sent after a result was merged sees that result (in this process: each one
    after the previous result; with workers: up to `MAP_AHEAD` tasks earlier)."""
    merged: list[int] = []
    tasks = WithLatest([(1,), (2,), (3,)], lambda: sum(merged))
    assert len(tasks) == 3
    run_map(None, lambda a, b: (a, b), tasks, lambda _, result: merged.append(result[0]))
    assert merged == [1, 2, 3]
    seen: list[tuple[int, int]] = []
    merged.clear()
    run_map(
        None,
        lambda a, b: (a, b),
        tasks,
        lambda _, result: (seen.append(result), merged.append(result[0])),
    )
    assert seen == [(1, 0), (2, 1), (3, 3)]
    with worker_pool(2) as pool:
        found: list[tuple[int, ...]] = []
        run_map(pool, max, WithLatest([(5,), (1,)], lambda: 2), lambda _, r: found.append(r))
    assert found == [5, 2]


def test_a_started_pool_has_its_processes_before_any_task_and_is_used_once():
    with started_pool(2) as started:
        assert started is not None and len(started._processes) == 2
        with worker_pool(2, started) as pool:
            assert pool is started
            found: list[str | None] = []
            run_map(pool, os.getenv, [("POLARS_MAX_THREADS",)], lambda _, v: found.append(v))
        assert found == [str(max(1, (os.cpu_count() or 1) // 2))]
    with started_pool(1) as none:
        assert none is None


def test_a_started_pool_of_another_size_is_shut_down_for_a_new_one():
    with started_pool(2) as started, worker_pool(3, started) as pool:
        assert pool is not started and started._shutdown_thread
        assert sorted(run_all(pool, [(1,), (2,), (3,)])) == [1, 2, 3]
    with started_pool(2) as started, worker_pool(1, started) as pool:
        assert pool is None and started._shutdown_thread


def run_all(pool, tasks) -> list:
    found: list = []
    run_map(pool, abs, tasks, lambda _, value: found.append(value))
    return found


def test_ingest_starts_the_workers_while_the_adapter_reads(tmp_path, monkeypatch):
    """With a row count from the adapter (MEDS: the shards' metadata), `ingest` starts
    the planned worker processes before `read` and the build uses them; the corpus is
    the one-process corpus."""
    root = small_demo(tmp_path / "meds")
    # Two processes planned for these few rows, by the ingest and by the build.
    monkeypatch.setattr(writer, "planned_workers", lambda rows, workers, *_: workers)
    monkeypatch.setattr(seqlm.ingest, "planned_workers", lambda rows, workers: workers)
    made: list[int] = []
    executor = workers_module._executor
    monkeypatch.setattr(workers_module, "_executor", lambda n: made.append(n) or executor(n))
    spec = get_adapter("meds")
    read = spec.read

    def reading(*args):
        made.append(-1)  # the adapter reads after the workers were started
        return read(*args)

    monkeypatch.setitem(adapters_base._REGISTRY, "meds", dataclasses.replace(spec, read=reading))
    config = {"scheme": {"min_entities": 2}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        two = ingest("meds", [root], tmp_path / "two", config, workers=2)
        assert made == [2, -1]
        one = ingest("meds", [root], tmp_path / "one", config, workers=1)
    assert made == [2, -1, -1]
    assert_same_files(one.path, two.path)
    assert two.manifest["build"]["workers"] == 2


def test_planned_workers_follow_the_rows():
    many = writer.MIN_ROWS_PER_WORKER * 64
    assert writer.planned_workers(many, None) == min(os.cpu_count() or 1, 64)
    assert writer.planned_workers(writer.MIN_ROWS_PER_WORKER - 1, None) == 1
    assert writer.planned_workers(many, 3) == 3
    # At most one per partition: hashed ones, or the source's parts where more.
    assert writer.planned_workers(10, 4, rows_per_bucket=5) == 2
    assert writer.planned_workers(10, 4, rows_per_bucket=5, parts=3) == 3
