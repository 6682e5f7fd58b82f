"""Why an ingest kept no events: the rejects by reason and column, written where safe.

A mapping that rejects every row (an `order` column of text, a time column the adapter
cannot read) must say which column and why, not only that nothing is left; the rejects
file lets the user look at the rows themselves.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from seqlm.corpora_adapters.base import Ingested
from seqlm.corpus.store import REJECTS_FILE

# How many (reason, column) lines the message lists before "and N more".
MAX_REASONS = 6


def rejects_by_reason(rejects: pl.DataFrame) -> list[tuple[str, str | None, int]]:
    """(reason, column, rows) with the most frequent first."""
    if rejects.height == 0:
        return []
    counts = (
        rejects.group_by("reason", "column").len().sort(["len", "reason"], descending=[True, False])
    )
    return [(r, c, n) for r, c, n in counts.iter_rows()]


def describe_reasons(reasons: list[tuple[str, str | None, int]]) -> str:
    """`3,200 rows: order is not a number (column voice)` for each reason."""
    parts = [
        f"{n:,} {reason}" + (f" (column {column!r})" if column else "")
        for reason, column, n in reasons[:MAX_REASONS]
    ]
    if len(reasons) > MAX_REASONS:
        parts.append(f"and {len(reasons) - MAX_REASONS} more reasons")
    return "; ".join(parts)


def no_events_message(ingested: Ingested, out: Path) -> str:
    """The error for an ingest with zero events; writes `out/rejects.parquet` when `out`
    is absent or empty (never into a folder holding something else)."""
    rejects = ingested.rejects.to_frame()
    reasons = rejects_by_reason(rejects)
    head = f"adapter {ingested.adapter!r} kept no events from {ingested.rows_read:,} rows read"
    if not reasons:
        return f"{head}: the inputs hold no event rows"
    where = _write_rejects(rejects, out)
    saved = f"; the rejected rows are in {where}" if where else ""
    return f"{head}; rejected: {describe_reasons(reasons)}{saved}"


def _write_rejects(rejects: pl.DataFrame, out: Path) -> Path | None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return None
    out.mkdir(parents=True, exist_ok=True)
    rejects.write_parquet(out / REJECTS_FILE)
    return out / REJECTS_FILE
