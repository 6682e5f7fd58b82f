"""What a benchmark process costs: peak memory and CPU seconds (shared by the ingest
benchmarks, run as scripts from this folder)."""

from __future__ import annotations

import resource
from pathlib import Path


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
