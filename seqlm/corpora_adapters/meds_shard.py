"""Helpers of `meds.read_shard`, the in-memory read of one shard that the corpus builder
uses as a partition: work per distinct code or per birth row instead of per row.

The builder's sort stage stores `kind` and `code` as categoricals anyway, so the shard
read gives them as categoricals: each distinct code's final code (rewrites, `AGE`) and
kind (the part before the first "//") are worked out once, and the rows get them by
their code's number (a split of every row's code string and the casts of two string
columns cost 0.15 CPU us per row, MEDS 20x)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from seqlm.events import EVENT_SCHEMA
from seqlm.vocabularies.categories import distinct_places

# A time later than any (the largest microsecond count): "no usable time" in a minimum.
NO_TIME = np.iinfo(np.int64).max


def categorical_codes(
    events: pl.DataFrame,
    final_code: Callable[[pl.Expr], pl.Expr],
    kind: Callable[[pl.Expr], pl.Expr],
) -> pl.DataFrame:
    """`events` whose `code` column holds the raw codes, with `code` =
    `final_code(code)` and `kind` = `kind(final code)`, both Categorical, each worked
    out once per distinct raw code. Nulls stay null."""
    raw = events["code"].cast(pl.Categorical)
    first, place = distinct_places(raw)
    distinct = raw.gather(first).cast(pl.String).to_frame("code")
    finals = distinct.select(final_code(pl.col("code")).alias("code"))
    table = finals.select(
        kind(pl.col("code")).cast(pl.Categorical).alias("kind"),
        pl.col("code").cast(pl.Categorical),
    )
    return events.with_columns(
        table["kind"].gather(place).alias("kind"), table["code"].gather(place).alias("code")
    )


def raw_categories(rows: pl.LazyFrame, categorical: bool) -> pl.DataFrame:
    """`rows` collected, their raw `code` Categorical if `categorical`: one hash of each
    row's code here, and the reasons' and births' comparisons with a code (`== "MEDS_BIRTH"`,
    `== ""`) compare category numbers instead of strings; `categorical_codes` then
    needs no cast (MEDS 20x, one thread: 0.03 CPU us per row less)."""
    frame = rows.collect().rechunk()
    return frame.with_columns(pl.col("code").cast(pl.Categorical)) if categorical else frame


def first_times(kept: pl.LazyFrame, births: pl.Expr) -> pl.LazyFrame:
    """The first kept timed event other than birth, per subject (its age is taken there).
    Lazy, so that it is computed with the events it joins (the lazy plan's
    `meds._events`; the corpus builder's shard read uses `birth_first_times`)."""
    return (
        kept.filter(pl.col("time").is_not_null() & ~births)
        .group_by("entity")
        .agg(first_time=pl.col("time").min())
    )


def birth_first_times(
    rows: pl.DataFrame, births: pl.Expr, used: pl.Expr | None = None
) -> pl.Series:
    """`first_times` of the `used` rows (all if None) put on the used rows where
    `births` holds, null on the others (which never read it): the earliest time of each
    run of rows of one subject by a numpy minimum over the run (no grouping of the
    rows: a shard is sorted by subject), then of each subject over its runs, joined
    onto the few birth rows only (MEDS 20x: a join onto every row cost 0.2 CPU us per
    row, a grouping of the rows 0.02)."""
    used = pl.lit(True) if used is None else used.fill_null(False)
    flags = rows.select(births.fill_null(False).alias("birth"), used.alias("used"))
    birth, used_rows = flags["birth"], flags["used"]
    found_rows = (birth & used_rows).arg_true()
    time = rows["time"]
    result = pl.Series("first_time", [None], dtype=time.dtype).new_from_index(0, rows.height)
    if found_rows.is_empty():
        return result
    entity = rows["entity"]
    starts = run_starts(entity.rle_id()).to_numpy()
    usable = (time.is_not_null() & ~birth & used_rows).to_numpy()
    times = np.where(usable, time.to_physical().fill_null(NO_TIME).to_numpy(), NO_TIME)
    runs = pl.DataFrame(
        {"entity": entity.gather(starts), "first": np.minimum.reduceat(times, starts)}
    )
    firsts = runs.group_by("entity").agg(
        pl.when(pl.col("first").min() < NO_TIME)
        .then(pl.col("first").min())
        .cast(time.dtype)
        .alias("first_time")
    )
    found = entity.gather(found_rows).to_frame()
    found = found.join(firsts, on="entity", how="left", maintain_order="left")
    return result.scatter(found_rows, found["first_time"])


def run_starts(run: pl.Series) -> pl.Series:
    """The first row of each run of `run` (run ids, `rle_id`: the first row is one)."""
    return run.ne(run.shift(1)).fill_null(True).arg_true()


def with_subject_facts(rows: pl.DataFrame, subjects: pl.DataFrame) -> pl.DataFrame:
    """`rows` left-joined with the `subjects` table on the subject's name (the `entity`
    column as a string: an integer id's decimal string), in row order, worked out once
    per run of rows of one subject (a shard is sorted by subject: a few thousand runs
    in 500k rows) and gathered onto the rows by run number, instead of hashing every
    row's name (rows out of subject order just make more runs)."""
    entity = rows["entity"]
    run = entity.rle_id()
    names = entity.gather(run_starts(run)).cast(pl.String).to_frame("entity")
    facts = names.join(subjects, on="entity", how="left", maintain_order="left")
    return rows.hstack(facts.drop("entity")[run].get_columns())


def event_frame(kept: pl.LazyFrame, columns: list[pl.Expr]) -> pl.DataFrame:
    """`EventTable.from_frame(kept.select(columns)).unsorted`, collected, for the
    columns of `meds._event_columns` (every event column but `group`, null here), but
    with `entity` as it is: integer subject ids stay integers (the corpus builder names
    each subject once; a cast of every row's id to a string cost 0.03 CPU us per row)."""
    frame = kept.select(columns)
    schema = frame.collect_schema()

    def column(name: str, dtype: pl.DataType) -> pl.Expr:
        if name not in schema:
            return pl.lit(None, dtype=dtype).alias(name)
        datetime = name == "time" and isinstance(schema[name], pl.Datetime)
        categorical = name in ("kind", "code") and schema[name] == pl.Categorical
        as_is = name == "entity" or datetime or categorical
        return pl.col(name) if as_is else pl.col(name).cast(dtype)

    return frame.select(column(name, dtype) for name, dtype in EVENT_SCHEMA.items()).collect()
