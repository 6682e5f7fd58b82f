"""The quickstart page's narrowed attention table."""

from __future__ import annotations

import polars as pl

from seqlm.studies.quickstart_report import attention_head_summary, html_table


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


def test_the_page_shows_the_comparisons_with_intervals_and_the_caution():
    import numpy as np

    from seqlm.evaluation.paired import paired_comparison
    from seqlm.evaluation.scores import TokenScores
    from seqlm.studies.quickstart_report import QuickstartReport, render_html_report

    n = 40
    sequence = np.repeat(np.arange(8), 5)
    ints = np.zeros(n, dtype=np.int64)
    base = TokenScores(
        sequence, ints + 1, ints + 7, ints, np.full(n, -0.5), ints, ints, np.full(n, 0.6)
    )
    model = TokenScores(
        sequence, ints + 1, ints + 7, ints, np.full(n, -0.4), ints, ints, np.full(n, 0.6)
    )
    comparison = paired_comparison(model, base, names=("model", "best n-gram (3-gram KN)"))
    summary = pl.DataFrame(
        {"model": ["model", "best n-gram (3-gram KN)"], "perplexity": [1.49, 1.65]}
    )
    page = render_html_report(
        QuickstartReport(
            title="t",
            summary=summary,
            lesion_rows=pl.DataFrame(
                {"group": ["all"], "model": ["model"], "condition": ["pre"], "perplexity": [1.5]}
            ),
            attention_heads=None,
            figures={},
            comparisons=[comparison.to_dict()],
            caution=["This model has not earned an interpretation of its attention:"],
        )
    )
    assert "Δ cross-entropy (nats)" in page and "+0.1000" not in page
    assert "-0.1000 [-0.1000, -0.1000]" in page and "<td>better</td>" in page
    assert "model is better than best n-gram (3-gram KN)" in page
    # the caution under the headline and again above the attention section
    assert page.count('class="caution"') == 2
    assert page.index('class="caution"') < page.index("<h2>Attention statistics</h2>")


def test_the_page_has_one_row_per_bird_against_its_own_ngram():
    import numpy as np

    from seqlm.evaluation.paired import paired_comparison
    from seqlm.evaluation.scores import TokenScores
    from seqlm.studies.quickstart_report import QuickstartReport, per_bird_table, render_html_report

    n = 30
    sequence = np.repeat(np.arange(6), 5)
    ints = np.zeros(n, dtype=np.int64)

    def scores(log_prob: float) -> TokenScores:
        return TokenScores(
            sequence, ints + 1, ints + 7, ints, np.full(n, log_prob), ints, ints, ints + 0.5
        )

    rows = []
    for bird, log_prob in (("bird1", -0.6), ("bird2", -0.3)):
        found = paired_comparison(scores(log_prob), scores(-0.5)).to_dict()
        rows.append({"run": bird, "condition": "pre", **found})
    assert per_bird_table([]) == ""
    table = per_bird_table(rows)
    assert "<td>bird1</td><td>6</td><td>+0.1000 [+0.1000, +0.1000]</td>" in table
    assert "<td>bird2</td><td>6</td><td>-0.2000 [-0.2000, -0.2000]</td>" in table
    assert "<td>worse</td>" in table and "<td>better</td>" in table
    assert "T = " not in table  # no fitted temperature: nothing to say
    fitted = per_bird_table([{**row, "temperature": 1.0523} for row in rows])
    assert "divided by T = 1.052, fitted on the pre-lesion tuning bouts" in fitted
    page = render_html_report(
        QuickstartReport(
            title="t",
            summary=pl.DataFrame({"model": ["model"], "perplexity": [1.5]}),
            lesion_rows=pl.DataFrame(
                {"group": ["all"], "model": ["model"], "condition": ["pre"], "perplexity": [1.5]}
            ),
            attention_heads=None,
            figures={},
            per_bird=rows,
        )
    )
    assert table in page
