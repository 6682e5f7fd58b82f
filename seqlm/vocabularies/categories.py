"""Work once per distinct value of a categorical column instead of once per row.

A categorical column's rows hold category numbers (shared by every categorical column
in the process). `distinct_places` finds each distinct number's first row and gives
every row the place of its number among them, by an array indexed by the number (a
gather per row, no hashing or join of the rows), so that a table worked out on the few
distinct values (strings split, numbers parsed) is put back on the rows by a gather.
"""

from __future__ import annotations

import polars as pl

# Above this category number the rows are looked up in a hash table instead of an
# array (the array has one entry per category number up to the largest).
DENSE_CATEGORIES = 1 << 24


def distinct_places(
    column: pl.Series, dense_below: int = DENSE_CATEGORIES
) -> tuple[pl.Series, pl.Series]:
    """(the first row of each distinct value, in the order of those rows; each row's
    place among them, UInt32) of a categorical or non-negative integer `column` (nulls
    are one value). The array lookup is used while the largest number is below
    `dense_below`."""
    number = column.to_physical()
    first = number.arg_unique()
    known = number.gather(first)
    places = pl.Series(range(known.len()), dtype=pl.UInt32)
    given = known.is_not_null()
    largest = known.max()
    if largest is None or int(largest) < dense_below:  # type: ignore[arg-type]
        size = 1 if largest is None else int(largest) + 1  # type: ignore[arg-type]
        lookup = pl.Series([None], dtype=pl.UInt32).new_from_index(0, size)
        place = lookup.scatter(known.filter(given), places.filter(given)).gather(number)
    else:
        place = number.replace_strict(known.filter(given), places.filter(given), default=None)
    if known.null_count():  # the null rows: the null's own place
        place = place.fill_null(places.filter(~given)[0])
    return first, place
