"""How much record time a context window covers: what a model with that context can reach.

A clinical record is long in time and dense in tokens: on the MIMIC-IV demo a 128-token
window covers a median of about two hours of a stay that lasts days, so a model cannot
learn that a lab result depends on last week's admission however good it is. Users see
it before training (`seqlm corpus info --context N`) and in the training log.

Windows are cut as the loader reads a long sequence (consecutive runs of `context`
tokens; a shorter sequence is one window of its own, since packed neighbours are other
documents), and a window's coverage is the time of its last token minus that of its first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from seqlm.durations import format_seconds
from seqlm.errors import Notice

# Windows measured at most; evenly spaced beyond that, so a 100M-token corpus costs
# the same as a small one.
MAX_WINDOWS = 200_000


class WindowTimeNotice(Notice):
    """The record time a training window covers (the CLI prints it as a note)."""


@dataclass(frozen=True)
class WindowTimeCoverage:
    context: int
    split: str
    windows: int  # measured (at most MAX_WINDOWS)
    median_s: float
    p90_s: float
    time_unit: str = "s"

    def sentence(self) -> str:
        """'a 128-token window covers a median 2.2 h (90th percentile 1.3 d) of record time'."""
        if self.time_unit == "index":
            median, p90 = f"{self.median_s:g}", f"{self.p90_s:g}"
            what = "index units of record time"
        else:
            median, p90 = format_seconds(self.median_s), format_seconds(self.p90_s)
            what = "of record time"
        return (
            f"a {self.context:,}-token window covers a median {median} "
            f"(90th percentile {p90}) {what} ({self.split} split, {self.windows:,} windows)"
        )

    def to_dict(self) -> dict:
        return {
            "context": self.context,
            "split": self.split,
            "windows": self.windows,
            "median_s": self.median_s,
            "p90_s": self.p90_s,
            "time_unit": self.time_unit,
        }


def window_starts(
    offsets: np.ndarray, lengths: np.ndarray, context: int
) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) token positions of every window, in tokens.bin coordinates."""
    per_sequence = -(-lengths // context)  # ceil
    first = np.repeat(offsets, per_sequence)
    within = np.arange(int(per_sequence.sum())) - np.repeat(
        np.cumsum(per_sequence) - per_sequence, per_sequence
    )
    first = first + within * context
    ends = np.repeat(offsets + lengths, per_sequence)
    last = np.minimum(first + context, ends) - 1
    return first, last


def window_time_coverage(corpus, context: int, split: str = "train") -> WindowTimeCoverage | None:
    """Median and 90th percentile of the record time one window covers; None when the
    corpus has no times or the split is empty."""
    if corpus.times is None:
        return None
    rows = corpus.split(split)
    if rows.is_empty():
        return None
    first, last = window_starts(
        rows["offset"].to_numpy().astype(np.int64),
        rows["length"].to_numpy().astype(np.int64),
        context,
    )
    if len(first) > MAX_WINDOWS:
        keep = np.linspace(0, len(first) - 1, MAX_WINDOWS).astype(np.int64)
        first, last = first[keep], last[keep]
    spans = np.asarray(corpus.times[last], dtype=np.float64) - np.asarray(
        corpus.times[first], dtype=np.float64
    )
    spans = np.clip(spans, 0.0, None)
    return WindowTimeCoverage(
        context=context,
        split=split,
        windows=len(spans),
        median_s=float(np.median(spans)),
        p90_s=float(np.quantile(spans, 0.9)),
        time_unit=getattr(corpus, "time_unit", "s"),
    )


def announce_window_time(corpus, context: int) -> WindowTimeCoverage | None:
    """Emit the coverage of the training windows as a notice (library code never prints)."""
    coverage = window_time_coverage(corpus, context)
    if coverage is not None:
        warnings.warn(coverage.sentence(), WindowTimeNotice, stacklevel=2)
    return coverage
