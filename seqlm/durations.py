"""Durations as people read them (50 ms, 2.2 h, 3 d): one formatter for every floor."""

from __future__ import annotations

import math


def format_seconds(seconds: float) -> str:
    """A short human label: 50 ms, 2 s, 5 min, 3 h, 2 d, 1 y."""
    if not math.isfinite(seconds):
        return "inf"
    if seconds == 0:
        return "0"
    for unit, size in (("y", 365 * 86400.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"
