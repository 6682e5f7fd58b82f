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
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` spawned processes sharing the cores (None: run in this process).

    Spawned, not forked: a fork of a process with polars' thread pool can deadlock. Each
    worker gets cores // workers polars threads so that they do not oversubscribe.
    """
    # A daemonic process (a multiprocessing.Pool worker) may not start processes.
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield None
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    saved = os.environ.get("POLARS_MAX_THREADS")
    # Read by polars when a worker imports it, so it must be in the environment the
    # workers inherit; this process's polars has read its own setting already.
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    try:
        with (
            ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=worker_start,
                initargs=(threads, os.getpid()),
            ) as pool,
            _main_module_hidden(),
        ):
            yield pool
    finally:
        if saved is None:
            os.environ.pop("POLARS_MAX_THREADS", None)
        else:
            os.environ["POLARS_MAX_THREADS"] = saved


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
