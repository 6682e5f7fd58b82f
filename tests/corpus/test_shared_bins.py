"""The fitted bins go to the count tasks as one file: read back, they are the same bins."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpus.shared_bins import share_bins, shared_bins
from seqlm.vocabularies.value_bins import CodeValueBins

FLOATS = st.floats(allow_nan=False, allow_infinity=False)
BINS = st.dictionaries(
    st.text(max_size=8),
    st.builds(
        lambda edges, numbers: CodeValueBins(
            tuple(sorted(edges)), tuple(float(i) for i in range(len(edges) + 1)), numbers
        ),
        st.lists(FLOATS, max_size=9, unique=True),
        st.booleans(),
    ),
    max_size=20,
)


@settings(max_examples=30, deadline=None)
@given(bins=BINS)
def test_bins_read_back_from_the_shared_file_are_the_fitted_ones(tmp_path_factory, bins):
    folder = tmp_path_factory.mktemp("work")
    path = share_bins(bins, folder)
    assert isinstance(path, Path) and path.parent == folder
    read = shared_bins(path)
    assert read == bins and list(read) == list(bins)  # same order too


def test_a_rewritten_file_is_read_again_and_no_folder_keeps_the_mapping(tmp_path):
    tmp_path = tmp_path / "song[draft]*"  # an output folder polars would take for a glob
    tmp_path.mkdir()
    first = {"LAB//1": CodeValueBins((1.0,), (0.5, 2.0))}
    second = {"LAB//2": CodeValueBins((3.0, 4.0), (2.0, 3.5, 5.0), text_numbers=True)}
    path = share_bins(first, tmp_path)
    assert shared_bins(path) == first
    share_bins(second, tmp_path)
    os.utime(path, ns=(1, 1))  # a new modification time, even on a coarse clock
    assert shared_bins(path) == second
    assert share_bins(first, None) is first
