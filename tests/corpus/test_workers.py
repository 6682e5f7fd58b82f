"""The worker processes' environment: polars threads per worker and the allocator
setting (seqlm.corpus.workers), this process's own environment left as it was."""

from __future__ import annotations

import os

from seqlm.corpus.workers import MALLOC_CONF_VARIABLE, WORKER_MALLOC_CONF, run_map, worker_pool


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
