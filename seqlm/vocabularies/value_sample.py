"""The bounded train sample of `ValueSampler` (seqlm.vocabularies.value_bins) in numpy:
per (code, source) the rows of smallest hash key (ties to the earlier row), and each
fitted code's sample values. Ranking and grouping the whole sample with polars cost
several times as much (MEDS x20: the last merge and the fit, 0.95 -> 0.3 s, serial in
the building process, `tests/vocabularies/test_value_bins.py` pins both against the
polars definitions)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl

from seqlm.vocabularies.categories import DENSE_CATEGORIES, distinct_places


def smallest_keys(
    rows: pl.DataFrame, size: int, no_cuts: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the `size` rows of smallest `rank_key` per (code, source), ties to the earlier
    row, in row order; the cuts of the groups that keep `size`, `no_cuts` if none).
    Only the full groups are looked at (a MEDS partition's train sample: 19k of 147k
    rows in 4 of 945 groups), each by a partition of its keys in numpy: ranking them
    with polars cost several times as much (x20's last merge before the fit: 0.4 s)."""
    if rows.height < size:
        return rows, no_cuts
    group = pl.col("code").to_physical().cast(pl.UInt64) * 2 + pl.col("source").cast(pl.UInt64)
    groups = rows.select(group.alias("group")).to_series()
    # Group numbers by category number (shared by the process, so they may be large).
    if int(groups.max()) < 2 * DENSE_CATEGORIES:  # type: ignore[arg-type]
        numbers = groups.to_numpy()
        counts = np.bincount(numbers)
    else:
        _, numbers, counts = np.unique(groups.to_numpy(), return_inverse=True, return_counts=True)
    full = np.flatnonzero(counts >= size)
    if full.size == 0:
        return rows, no_cuts
    # The full groups' rows, group by group (numbered 0.. in a small integer type that
    # numpy sorts by radix), each group's in row order.
    dense = np.full(counts.size, -1, dtype=np.int64)
    dense[full] = np.arange(full.size)
    rank = dense[numbers]
    places = np.flatnonzero(rank >= 0)
    small = np.uint16 if full.size <= 1 << 16 else np.uint32
    places = places[np.argsort(rank[places].astype(small), kind="stable")]
    ends = np.cumsum(counts[full])
    keys = rows["rank_key"].to_numpy()
    keep = np.ones(rows.height, dtype=bool)
    cuts = np.empty(full.size, dtype=np.uint64)
    firsts = np.empty(full.size, dtype=np.int64)
    for number, (start, end) in enumerate(zip(ends - counts[full], ends, strict=True)):
        at = places[start:end]
        kept, cuts[number] = smallest_of(keys[at], size)
        keep[at[~kept]] = False
        firsts[number] = at[0]
    found = rows.select("code", "source").gather(firsts).with_columns(cut=pl.Series(cuts))
    return rows.filter(pl.Series(keep)), found


def smallest_of(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.uint64]:
    """(which of one group's `keys`, in row order, are its `size` smallest, ties to the
    earlier row, as a boolean mask; the largest kept key), for at least `size` keys."""
    cut = np.partition(keys, size - 1)[size - 1]
    # Below the cut all stay; of the keys at the cut, the earliest up to `size`.
    kept = keys < cut
    tied = np.flatnonzero(keys == cut)
    kept[tied[: size - int(kept.sum())]] = True
    return kept, cut


def below_cuts(kept: pl.DataFrame, cuts: pl.DataFrame) -> pl.DataFrame:
    """The rows of `kept` whose key is below their (code, source)'s cut, if it has one."""
    if cuts.height == 0 or kept.height == 0:
        return kept
    cut = kept.join(cuts, on=["code", "source"], how="left", maintain_order="left")
    return kept.filter((cut["cut"].is_null() | (cut["rank_key"] < cut["cut"])).to_numpy())


def code_values(
    sample: pl.DataFrame, wanted: Mapping[str, int], text_codes: set[str], sample_size: int
) -> Iterator[tuple[str, np.ndarray]]:
    """Each wanted code's sample values in sample order (a code that reads its texts as
    numbers: its numeric values and text numbers together, the `sample_size` of
    smallest key), in no particular order of codes. Only those codes rank their two
    samples together: every other code's numeric sample holds at most `sample_size`
    rows already. Worked out per distinct code and in numpy on the rows (a string cast,
    filters, a ranking and a grouping of the whole sample in polars cost 0.3 s at x20)."""
    first, place = distinct_places(sample["code"])
    names = sample["code"].gather(first).cast(pl.String).to_list()
    is_wanted = np.array([name in wanted for name in names], dtype=bool)
    is_text = np.array([name in text_codes for name in names], dtype=bool)
    places = place.to_numpy()
    chosen = is_wanted[places] & (is_text[places] | (sample["source"].to_numpy() == 0))
    rows = np.flatnonzero(chosen)
    # The rows code by code, each code's in sample order (a radix sort of small numbers).
    small = np.uint16 if len(names) <= 1 << 16 else np.uint32
    rows = rows[np.argsort(places[rows].astype(small), kind="stable")]
    counts = np.bincount(places[rows], minlength=len(names))
    ends = np.cumsum(counts)
    values, keys = sample["value"].to_numpy(), sample["rank_key"].to_numpy()
    for number in np.flatnonzero(counts):
        at = rows[ends[number] - counts[number] : ends[number]]
        if is_text[number] and at.size > sample_size:
            at = at[smallest_of(keys[at], sample_size)[0]]
        yield names[number], values[at]
