"""The figure of `seqlm lesion-splits`: per group, each split's model-minus-own-n-gram
cross-entropy on held-out pre-lesion song and the pooled estimate with its interval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.evaluation.plots import save_bar_figure
from seqlm.plotting import new_figure, plain_text


@plain_text
def splits_plot(
    pooled_rows: Sequence[Mapping[str, Any]], splits: int, pre: str, path: str | Path
) -> Path:
    """Grey dots: one split each; black: pooled over splits, with its 95% interval (the
    rows of `lesion_splits.pool_bouts`, condition `pre` drawn). Below zero, the model
    predicts the group's held-out song better than its own n-gram."""
    rows = [row for row in pooled_rows if row["condition"] == pre]
    figure = new_figure(figsize=(max(5.0, 1.6 + 0.9 * len(rows)), 4.8))
    figure.set_layout_engine("constrained")
    axes = figure.subplots()
    x = np.arange(len(rows))
    for i, row in enumerate(rows):
        points = [s["difference"] for s in row["per_split"] if s["difference"] is not None]
        spread = np.linspace(-0.15, 0.15, len(points)) if len(points) > 1 else np.zeros(1)
        axes.scatter(
            i + spread[: len(points)],
            points,
            s=18,
            color="0.55",
            zorder=2,
            label="one split" if i == 0 else None,
        )
        ce = row["metrics"]["cross_entropy"]
        below, above = ce["difference"] - ce["ci_low"], ce["ci_high"] - ce["difference"]
        axes.errorbar(
            i + 0.3,
            ce["difference"],
            yerr=[[below], [above]],
            fmt="o",
            color="black",
            capsize=4,
            zorder=3,
            label="pooled over splits (95% CI)" if i == 0 else None,
        )
    axes.axhline(0.0, color="tab:red", linewidth=1, linestyle="--", zorder=1)
    labels = [f"{row['group']}\n{row['bouts']} bouts" for row in rows]
    axes.set_xticks(x + 0.1, labels, fontsize=8)
    axes.set(
        ylabel="model minus own n-gram (nats per target)",
        title=f"Held-out {pre}-lesion song over {splits} splits (below 0: model better)",
    )
    return save_bar_figure(figure, axes, path)
