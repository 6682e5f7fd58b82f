"""What the ingest says about syllable labels: their counts, and the likely intro note.

Introductory notes are marked differently by different labs (`i`, `in`, `intro`, a
digit): with the default `intro_labels = ["i"]` a file that marks them otherwise keeps
them, silently. A label that begins most bouts while being rarer elsewhere is the
classic signature of an intro note, so the ingest names it and says how to drop it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import polars as pl

# Labels listed by count in the summary line before "...".
SHOWN_LABELS = 12
# A label is a likely intro note when it begins at least this share of the bouts ...
START_SHARE = 0.5
# ... and its share of bout starts is at least this multiple of its share of syllables.
START_ENRICHMENT = 2.0
MIN_BOUTS = 3


def label_notes(frame: pl.DataFrame, options: Mapping[str, Any]) -> list[str]:
    """Summary lines: label counts, and the likely intro note with how to drop it."""
    if frame.height == 0:
        return []
    counts = frame["code"].value_counts(sort=True)
    total = frame.height
    shown = ", ".join(f"{label!r}: {n:,}" for label, n in counts.head(SHOWN_LABELS).iter_rows())
    more = f", ... ({counts.height - SHOWN_LABELS} more)" if counts.height > SHOWN_LABELS else ""
    notes = [f"{counts.height} syllable labels: {shown}{more}"]
    intro = likely_intro(frame)
    if intro is not None:
        notes.append(_intro_note(intro, total, counts, options))
    return notes


def likely_intro(frame: pl.DataFrame) -> tuple[str, int, int] | None:
    """(label, bouts it begins, bouts) for a label that dominates bout starts, else None."""
    starts = frame.filter(pl.col("order") == 0)["code"]
    if starts.len() < MIN_BOUTS:
        return None
    top = starts.value_counts(sort=True).row(0)
    label, begins = str(top[0]), int(top[1])
    share_starts = begins / starts.len()
    share_all = int((frame["code"] == label).sum()) / frame.height
    if share_starts >= START_SHARE and share_starts >= START_ENRICHMENT * share_all:
        return label, begins, starts.len()
    return None


def _intro_note(
    intro: tuple[str, int, int], total: int, counts: pl.DataFrame, options: Mapping[str, Any]
) -> str:
    label, begins, bouts = intro
    n = int(counts.filter(pl.col("code") == label)["count"].sum())
    head = (
        f"{label!r} begins {begins:,} of {bouts:,} bouts ({begins / bouts:.0%}) and is "
        f"{n / total:.1%} of syllables: likely the introductory note"
    )
    intro_labels = list(options.get("intro_labels") or [])
    if label in intro_labels and not options.get("drop_intro"):
        return f"{head}; kept (drop it with --option drop_intro=true)"
    if label not in intro_labels:
        wanted = json.dumps([*intro_labels, label])
        return (
            f"{head}; intro_labels is {json.dumps(intro_labels)}, so it is kept as a "
            f"syllable (drop it with --option 'intro_labels={wanted}' --option drop_intro=true)"
        )
    return head
