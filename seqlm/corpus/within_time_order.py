"""The order of the events that share a timestamp (`seqlm ingest --within-time-order`).

A sequence lists an entity's events by time; events of one entity at one time (a lab
panel, the diagnoses of a discharge, the static rows) have no order of their own: MEDS
defines none, and a MEDS file carries them in whatever order its extraction wrote.

- `file` (the default): the source's order (the adapter's `order` column, i.e. the
  file's row order); the corpus is byte for byte what it was before this option.
- `code`: each (entity, time) group sorted by code, then value (nulls first, so a
  code's bare event precedes its valued ones), then text, then kind, with the file's
  order breaking the remaining ties (stable). Events equal on all of those make the
  same token at the same time, so the token sequence of a timestamp is one canonical
  function of its set of events, whatever order the file had. Rows without a time
  share no timestamp and keep the source's order: MEDS static rows, and every event of
  an untimed source (syllable strings, whose order is the song).

The stage runs between the sort and the vocabulary (`build_corpus`), over each
partition's sorted work file, in the workers like the other map stages; it changes
neither the rows, nor the times, nor any count, so the vocabulary, the index and
`times.bin` are those of `file` order and only the ids within a timestamp move
(tests/corpus/test_within_time_order.py). A source whose events each have their own
time (timed birdsong syllables) or none (syllable strings) gives the same corpus in
both orders.

What it does to the metrics is in docs/formats.md, "Events that share a timestamp".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from seqlm.corpus.partitions import PartitionPaths, read_sorted_file, write_sorted_file
from seqlm.corpus.stages import StageClock
from seqlm.corpus.workers import run_map
from seqlm.errors import ConfigError

WITHIN_TIME_ORDERS = ("file", "code")
DEFAULT_WITHIN_TIME_ORDER = "file"
# The manifest key; a corpus written before the option has none and is in file order.
MANIFEST_KEY = "within_time_order"
# The sort key inside one (entity, time) group for `code`; `order` breaks the ties.
CODE_ORDER_KEY = ("code", "value", "text", "kind", "order")
_GROUP = "_time_group"


def check_within_time_order(order: str) -> str:
    """`order` if it is one of `WITHIN_TIME_ORDERS`, else a ConfigError naming them."""
    if order not in WITHIN_TIME_ORDERS:
        raise ConfigError(
            f"within-time order {order!r} is not one of {', '.join(WITHIN_TIME_ORDERS)} "
            "(file: the source's order; code: sorted by code within each timestamp)"
        )
    return order


def corpus_within_time_order(manifest: Mapping[str, Any] | None) -> str:
    """The within-time order a corpus was built with (`file` for corpora that predate
    the option)."""
    return str((manifest or {}).get(MANIFEST_KEY, DEFAULT_WITHIN_TIME_ORDER))


def describe_within_time_order(order: str) -> str:
    """One line for reports: which order the events of one timestamp are in."""
    if order == "code":
        return (
            "events that share a timestamp are in code order (ingest --within-time-order "
            "code): next-event figures within a timestamp score that canonical order"
        )
    return (
        "events that share a timestamp are in the source file's order (ingest "
        "--within-time-order file): next-event figures within a timestamp score that order"
    )


def in_code_order(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` (in sequence order: each entity's rows together, by time) with each run
    of rows of one entity and one time sorted by `CODE_ORDER_KEY`; the runs stay where
    they are. A row without a time is a group of its own (it keeps its place)."""
    entity, time = pl.col("entity"), pl.col("time")
    new_group = entity.ne_missing(entity.shift(1)) | time.ne_missing(time.shift(1))
    new_group = new_group | time.is_null()
    keyed = rows.with_columns(new_group.cum_sum().alias(_GROUP))
    return keyed.sort([_GROUP, *CODE_ORDER_KEY], nulls_last=False, maintain_order=True).drop(_GROUP)


def order_partition(part: PartitionPaths, order: str) -> int:
    """Put one partition's sorted work file in `order` (rewritten in place); returns
    its rows."""
    if order == "file" or not part.sorted_file.exists():
        return 0
    ordered = in_code_order(read_sorted_file(part.sorted_file))
    write_sorted_file(ordered, part.sorted_file)
    return ordered.height


def order_within_time(
    pool: Any, parts: list[PartitionPaths], order: str, n_events: int, clock: StageClock
) -> None:
    """The build's stage between the sort and the vocabulary: every partition's events
    of one timestamp put in `order` (nothing to do for `file`, the sort's order)."""
    if check_within_time_order(order) == "file":
        return
    with clock.stage("ordering events within a time", n_events) as advance:
        run_map(pool, order_partition, [(p, order) for p in parts], lambda _, n: advance(n))
