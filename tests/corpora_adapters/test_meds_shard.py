"""`meds_shard`'s per-run work of the shard read (`meds.read_shard`) against the plain
per-row definitions it replaces: the subject facts joined on every row's name, each
subject's first time grouped over its rows, the event columns cast as `EventTable`."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.meds_shard import (
    birth_first_times,
    event_frame,
    first_times,
    with_subject_facts,
)
from seqlm.events import EVENT_SCHEMA, EventTable

TIME = pl.Datetime("us")

# Rows of a few subjects (integer ids, some null), in runs that may repeat (rows out of
# subject order), with null or repeated times and some birth rows.
rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 5)),
        st.one_of(st.none(), st.integers(0, 4)),
        st.sampled_from(["MEDS_BIRTH", "LAB//1", "DX//2"]),
    ),
    max_size=40,
)


def frame_of(rows: list[tuple[int | None, int | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "entity": [r[0] for r in rows],
            "time": [None if r[1] is None else r[1] * 86_400_000_000 for r in rows],
            "code": [r[2] for r in rows],
        },
        schema={"entity": pl.Int64, "time": pl.Int64, "code": pl.String},
    ).with_columns(pl.col("time").cast(TIME))


@settings(max_examples=200, deadline=None)
@given(rows_strategy, st.sets(st.integers(0, 6)))
def test_subject_facts_per_run_equal_the_join_on_every_rows_name(rows, known):
    frame = frame_of(rows)
    subjects = pl.DataFrame(
        {
            "entity": [str(s) for s in sorted(known)],
            "birth_order": [s * 10 for s in sorted(known)],
            "split": ["train" if s % 2 else "held_out" for s in sorted(known)],
        },
        schema={"entity": pl.String, "birth_order": pl.Int64, "split": pl.String},
    )
    found = with_subject_facts(frame, subjects)
    named = frame.with_columns(pl.col("entity").cast(pl.String))
    plain = named.join(subjects, on="entity", how="left", maintain_order="left")
    assert found.schema["entity"] == pl.Int64  # the ids stay integers
    assert found.with_columns(pl.col("entity").cast(pl.String)).equals(plain)


@settings(max_examples=200, deadline=None)
@given(rows_strategy)
def test_birth_first_times_equal_the_grouped_first_times_on_birth_rows(rows):
    kept = frame_of(rows).filter(pl.col("entity").is_not_null())
    births = pl.col("code") == "MEDS_BIRTH"
    firsts = first_times(kept.lazy(), births).collect()
    plain = kept.join(firsts, on="entity", how="left", maintain_order="left").select(
        pl.when(births).then(pl.col("first_time"))
    )
    found = birth_first_times(kept, births)
    assert found.name == "first_time" and found.dtype == TIME
    assert found.to_list() == plain.to_series().to_list()
    # The same on all rows with the used ones marked (the others: null, not counted).
    rows = frame_of(rows)
    used = pl.col("entity").is_not_null()
    marked = birth_first_times(rows, births, used).filter(rows.select(used).to_series())
    assert marked.to_list() == found.to_list()


def test_event_frame_keeps_integer_ids_and_casts_the_rest_as_event_table():
    kept = frame_of([(3, 1, "A"), (3, None, "B"), (7, 2, "C")]).with_columns(
        order=pl.int_range(3, dtype=pl.Int32),
        kind=pl.col("code"),
        value=pl.Series([1, None, 2], dtype=pl.Int32),
        text=pl.lit(None),
        split=pl.lit("train"),
    )
    # The columns `meds._event_columns` gives: every event column but `group`.
    columns = [pl.col(c) for c in kept.columns]
    found = event_frame(kept.lazy(), columns)
    plain = EventTable.from_frame(kept.lazy().select(columns)).unsorted.collect()
    assert found.columns == list(EVENT_SCHEMA)
    assert found["entity"].dtype == pl.Int64
    assert found.with_columns(pl.col("entity").cast(pl.String)).equals(plain)
