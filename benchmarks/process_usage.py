"""What a benchmark process costs: peak memory and CPU seconds (shared by the ingest
benchmarks, run as scripts from this folder)."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

# How often `TreePeak` adds up the resident sets of the process and its children.
SAMPLE_SECONDS = 0.05


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not `ru_maxrss`: Linux carries that
    across fork+exec, so a child would inherit the parent's peak from data generation."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the corpus workers): a
    figure that, unlike wall time, does not grow when other work shares the cores."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants now (Linux /proc)."""
    total_kb = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:  # it ended while being read
            continue
    return total_kb / 1024


class TreePeak:
    """The largest summed resident memory of this process and its workers, sampled
    every `SAMPLE_SECONDS` while the `with` block runs: the memory the machine had to
    find at once (the sum of each process's own peak is an upper bound on it)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(os.getpid()))
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, tree_rss_mb(os.getpid()))
