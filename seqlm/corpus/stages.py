"""Timing and progress of the corpus build's stages: rows/s and ETA while a stage runs,
seconds per stage for the manifest."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from seqlm.progress import Progress


class StageClock:
    """Starts a progress bar per stage (total = rows, so the bar's ETA is in rows) and
    records each stage's wall seconds in `seconds` and this process's CPU seconds (all
    its threads, not worker processes) in `cpu_seconds`: on a loaded machine the wall
    time says little about the cost."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, rows: int | None = None) -> Iterator[Callable[[int], None]]:
        """`with clock.stage("sorting", rows) as advance: ... advance(rows_done)`."""
        start = time.perf_counter()
        cpu_start = time.process_time()
        done = 0
        self.progress.start(name, total=rows)

        def advance(amount: int) -> None:
            nonlocal done
            done += amount
            self.progress.advance(amount)
            elapsed = time.perf_counter() - start
            if elapsed > 0:
                self.progress.update(rows_per_s=f"{done / elapsed:,.0f}")

        try:
            yield advance
        finally:
            self.progress.finish()
            self.seconds[name] = round(time.perf_counter() - start, 3)
            self.cpu_seconds[name] = round(time.process_time() - cpu_start, 3)

    def record(self, name: str, seconds: float, cpu_seconds: float) -> None:
        """A stage timed elsewhere (run beside another, with no progress bar)."""
        self.seconds[name] = round(seconds, 3)
        self.cpu_seconds[name] = round(cpu_seconds, 3)
