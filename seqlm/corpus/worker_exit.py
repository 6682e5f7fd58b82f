"""How a worker process of the corpus build starts: its polars threads set, and its
exit tied to the build's (seqlm.corpus.workers.worker_pool)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
import time

# How often a worker process looks whether the build that started it still runs.
PARENT_CHECK_SECONDS = 0.5
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_start(threads: int, parent: int) -> None:
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    _exit_with_parent(parent)


def _exit_with_parent(parent: int) -> None:
    """A worker whose build was killed (its parent gone, the pool never shut down)
    would wait for tasks forever, holding its memory, so it is killed with its parent:
    by the kernel on Linux (a watching thread would need the GIL, which a busy worker
    may hold), else by a thread that watches the parent. `parent` is passed in: a
    worker still starting when the build died would find its new parent here."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        linux = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):
        linux = False
    if not linux:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    elif os.getppid() != parent:  # it died before the kernel was told
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)
