"""The event schema: the one table shape every adapter produces and everything reads.

An `EventTable` holds one row per event with the canonical columns below, sorted by
(entity, time, order). It sits on the ground floor (it imports nothing of seqlm but
`errors`) so that adapters, vocabularies and the corpus builder all import it downward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from seqlm.errors import InputError

# The canonical event columns. `time` is Float64 seconds from the entity's start, or a
# Datetime (MEDS); everything downstream converts it with `time_in_seconds`.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "entity": pl.String(),
    "group": pl.String(),
    "time": pl.Float64(),
    "order": pl.Int64(),
    "kind": pl.String(),
    "code": pl.String(),
    "value": pl.Float64(),
    "text": pl.String(),
    "split": pl.String(),
}
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA)
SPLITS: tuple[str, ...] = ("train", "tuning", "held_out")
SORT_KEY: tuple[str, ...] = ("entity", "time", "order")


@dataclass
class EventTable:
    """One row per event, sorted by (entity, time, order) once collected.

    `frame` is lazy so that sources larger than memory stream through. `attributes`
    names extra entity-level columns (constant within an entity, e.g. a bird's lesion
    `condition`) that the corpus copies into its index.
    """

    frame: pl.LazyFrame
    attributes: tuple[str, ...] = ()
    # The same events before the sort, for readers that partition them first (the
    # corpus builder): sorting them all at once would hold them all in memory.
    unsorted: pl.LazyFrame | None = None

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame | pl.LazyFrame, attributes: Sequence[str] = ()
    ) -> EventTable:
        """Fill absent optional columns with nulls, cast to the schema, and sort."""
        lazy = frame.lazy()
        names = lazy.collect_schema().names()
        for required in ("entity", "code"):
            if required not in names:
                raise InputError(f"event table has no {required!r} column", column=required)
        time_type = lazy.collect_schema().get("time")
        exprs = []
        for name, dtype in EVENT_SCHEMA.items():
            if name == "time" and isinstance(time_type, pl.Datetime):
                exprs.append(pl.col("time"))
            elif name in names:
                exprs.append(pl.col(name).cast(dtype))
            elif name == "order":
                exprs.append(pl.int_range(pl.len(), dtype=pl.Int64).over("entity").alias(name))
            elif name == "kind":
                exprs.append(pl.lit("event", dtype=pl.String()).alias(name))
            else:
                exprs.append(pl.lit(None, dtype=dtype).alias(name))
        exprs.extend(pl.col(a) for a in attributes)
        lazy = lazy.select(exprs)
        return cls(
            frame=lazy.sort(list(SORT_KEY), nulls_last=False, maintain_order=True),
            attributes=tuple(attributes),
            unsorted=lazy,
        )

    def collect(self) -> pl.DataFrame:
        return self.frame.collect()

    @property
    def columns(self) -> list[str]:
        return list(EVENT_COLUMNS) + list(self.attributes)


def time_in_seconds(time: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Seconds since the entity's first timed event, as Float64, for either time type."""
    if isinstance(dtype, pl.Datetime):
        seconds = time.dt.epoch("us").cast(pl.Float64) / 1e6
    else:
        seconds = time.cast(pl.Float64)
    return seconds - seconds.min().over("entity")
