"""Tick choice on the ratio-to-uniform axes of the statistics figures."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqlm.analysis.stats_plots import MAX_RATIO_TICKS, MIN_TICK_GAP, RATIO_TICK_SETS, ratio_ticks


def test_narrow_range_keeps_the_fine_ticks():
    assert ratio_ticks(0.6, 2.2) == (0.7, 1.0, 1.5, 2.0)


def test_wide_range_drops_to_a_coarser_set():
    # the layer-1 panel of the finch figure: 0.003 .. 6 had 12 overlapping labels
    ticks = ratio_ticks(0.003, 6.0)
    assert ticks == (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@given(
    low=st.floats(min_value=1e-3, max_value=10.0),
    decades=st.floats(min_value=0.05, max_value=6.0),
)
def test_ticks_are_inside_few_and_apart(low, decades):
    high = low * 10**decades
    ticks = ratio_ticks(low, high)
    if not ticks:  # only when no plain ratio lies in the range at all
        assert not [t for t in RATIO_TICK_SETS[0] if low <= t <= high]
    assert len(ticks) <= MAX_RATIO_TICKS
    assert all(low <= t <= high for t in ticks)
    if len(ticks) > 1:
        gaps = [math.log10(b / a) for a, b in itertools.pairwise(ticks)]
        assert min(gaps) / decades >= MIN_TICK_GAP - 1e-9 or len(ticks) <= 3


@pytest.mark.parametrize("low, high", [(1.0, 1.0), (0.0, 1.0)])
def test_degenerate_ranges_do_not_fail(low, high):
    assert 1.0 in ratio_ticks(low, high)


def test_a_head_without_a_finite_value_is_named_not_silently_dropped(tmp_path):
    """Issue 20: mean_elapsed.png plotted 7 of 16 heads and said nothing of the others."""
    import polars as pl

    from seqlm.analysis.stats_plots import plot_mean_elapsed

    heads = pl.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "head": [0, 1, 0, 1],
            "mean_elapsed_s": [10.0, float("nan"), 12.0, None],
            "uniform_mean_elapsed_s": [11.0, 11.0, 11.0, 11.0],
        },
        schema_overrides={"mean_elapsed_s": pl.Float64},
    )
    with pytest.warns(UserWarning, match=r"2 of 4 heads not shown .*: L0H1, L1H1"):
        written = plot_mean_elapsed(heads, tmp_path / "mean_elapsed", dpi=40)
    assert all(path.exists() and path.stat().st_size > 0 for path in written)
    svg = next(path for path in written if path.suffix == ".svg").read_text()
    assert "2 of 4 heads not shown" in svg
