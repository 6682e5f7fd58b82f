"""Where the corpus build's map stages run: a pool of spawned worker processes sharing
the cores (`worker_pool`), or this process, and `run_map`, which calls a stage function
on every partition and hands the results back in partition order."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from seqlm.corpus.worker_exit import worker_start

# polars' allocator (jemalloc) in the workers keeps freed pages 5 s (dirty and muzzy
# decay) before handing them back to the system, not polars' 0.5 and 1 s: every
# partition allocates about the same buffers again, and pages handed back are faulted
# in again (docs/formats.md, "Session 10"). polars appends `_RJEM_MALLOC_CONF` to its
# own defaults when a worker imports it, so the last setting, this one, wins.
MALLOC_CONF_VARIABLE = "_RJEM_MALLOC_CONF"
WORKER_MALLOC_CONF = "dirty_decay_ms:5000,muzzy_decay_ms:5000"
# glibc's malloc (numpy's arrays) in the workers: arrays up to 256 MiB come from the heap
# and up to 512 MiB of freed heap is kept, not handed back and faulted in again for
# the next partition's arrays of the same sizes (MEDS x20 at 2 workers, whole build:
# minor faults 1.43-1.54M -> 0.77-0.82M, system CPU 6.2-6.3 -> 4.3 s; docs/formats.md,
# "Session 13"). A user's own setting is kept.
GLIBC_MALLOC_SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(512 << 20),
}
# Tasks a worker that `run_map` keeps in flight (results wait in order for the merge).
MAP_AHEAD = 2


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Spawned workers (started as tasks arrive) re-run the parent's main script unless
    it is hidden from them:
    a user's script calling `build_corpus` without an `if __name__ == "__main__"` guard
    would otherwise run again in every worker. The workers need nothing from it."""
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


@contextmanager
def worker_pool(
    workers: int, started: ProcessPoolExecutor | None = None
) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` spawned processes sharing the cores (None: run in this process);
    `started` (`started_pool`) is used when it has as many, else shut down.

    Spawned, not forked: a fork of a process with polars' thread pool can deadlock. Each
    worker gets cores // workers polars threads so that they do not oversubscribe.
    """
    if started is not None and getattr(started, "_max_workers", 0) != workers:
        # Not needed: its idle processes would hold their memory through the build.
        started.shutdown(wait=False, cancel_futures=True)
        started = None
    # A daemonic process (a multiprocessing.Pool worker) may not start processes.
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield None
        return
    pool = started if started is not None else _executor(workers)
    with _worker_settings(workers), _main_module_hidden():
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # none writes after this
            raise
    # Every task has ended: the workers exit (x20: 0.2-0.7 s of freeing memory) beside
    # what the build does next; `started_pool` or the interpreter's exit joins them.
    pool.shutdown(wait=False)


@contextmanager
def started_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` worker processes started now (None for one), for `worker_pool`: they
    start and import polars and seqlm (about 0.6 s each) while the caller reads its
    input (`seqlm.ingest`), instead of at the first stage with a core idle. Shut down
    on exit, used or not."""
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield None
        return
    with _worker_settings(workers), _main_module_hidden():
        pool = _executor(workers)
        # A spawning pool starts a process per task while none is idle.
        for _ in range(workers):
            pool.submit(os.getpid)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _executor(workers: int) -> ProcessPoolExecutor:
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=worker_start,
        initargs=(threads, os.getpid()),
    )


@contextmanager
def _worker_settings(workers: int) -> Iterator[None]:
    """The environment the workers inherit while they start (read by polars when a
    worker imports it; this process's polars has read its own settings already)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    inherited = os.environ.get(MALLOC_CONF_VARIABLE)
    settings = {
        "POLARS_MAX_THREADS": str(threads),
        # After what this process has (polars' defaults, a user's setting): last wins.
        MALLOC_CONF_VARIABLE: f"{inherited},{WORKER_MALLOC_CONF}"
        if inherited
        else WORKER_MALLOC_CONF,
    }
    settings.update({k: v for k, v in GLIBC_MALLOC_SETTINGS.items() if k not in os.environ})
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class WithLatest(Sequence[tuple[Any, ...]]):
    """`tasks`, each with `latest()` appended when it is read: `run_map` reads a task
    when it sends it, so it gets what the results merged so far make of `latest` (the
    sort stage: the value sampler's cuts, which only fall)."""

    def __init__(self, tasks: Sequence[tuple[Any, ...]], latest: Callable[[], Any]) -> None:
        self.tasks = tasks
        self.latest = latest

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int):
            raise TypeError("WithLatest is read one task at a time")
        return (*self.tasks[index], self.latest())


def run_map(
    pool: ProcessPoolExecutor | None,
    function: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    on_done: Callable[[int, Any], None],
) -> None:
    """Call `function(*task)` for every task, here or in `pool`; `on_done(i, result)`
    is called in task order, so merges happen in the same order either way.

    At most `MAP_AHEAD` tasks a worker are in flight, and each result is dropped once
    `on_done` has it: a future keeps its result, so submitting every task at once held
    every partition's sample, counts or token ids in this process until the stage ended
    (MEDS 100x: several hundred MB)."""
    if pool is None:
        for i, task in enumerate(tasks):
            on_done(i, function(*task))
        return
    ahead = MAP_AHEAD * max(1, getattr(pool, "_max_workers", 1))
    futures: deque[Future[Any]] = deque()
    try:
        for i in range(len(tasks)):
            while len(futures) < ahead and i + len(futures) < len(tasks):
                futures.append(pool.submit(function, *tasks[i + len(futures)]))
            on_done(i, futures.popleft().result())
    finally:
        for future in futures:
            future.cancel()
