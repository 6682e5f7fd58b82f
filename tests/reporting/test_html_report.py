"""The quickstart page's narrowed attention table."""

from __future__ import annotations

import polars as pl

from seqlm.reporting.html_report import attention_head_summary, html_table


def test_attention_table_keeps_the_compared_columns_with_readable_headers():
    heads = pl.DataFrame(
        {
            "layer": [0, 0],
            "head": [0, 1],
            "queries": [10, 10],
            "mean_distance": [3.5, 9.0],
            "uniform_mean_distance": [7.0, 7.0],
            "entropy": [1.0, 2.0],
            "normalized_entropy": [0.4, 0.9],
            "mass_beyond_8": [0.1, 0.5],
            "mass_beyond_32": [0.0, 0.2],
            "sink_mass": [0.0, 0.0],
        }
    )
    table = attention_head_summary(heads)
    assert table.columns == [
        "layer",
        "head",
        "mean distance",
        "uniform baseline",
        "entropy / log(keys)",
        "mass > 8",
        "mass > 32",
    ]
    assert table["mean distance"].to_list() == [3.5, 9.0]
    assert "mass &gt; 32" in html_table(table)
