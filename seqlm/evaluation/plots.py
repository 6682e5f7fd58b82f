"""Bar figures of the evaluation reports: perplexity by group, and their shared style."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.plotting import new_figure, plain_text


@plain_text
def perplexity_by_group_plot(
    frame: pl.DataFrame,
    path: str | Path,
    group: str = "group",
    models: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Grouped bars: one cluster per group, one bar per model in `models` order (a log
    axis with plain-number ticks when the perplexities span more than 20x, as uniform
    beside a trained model does), each bar labelled with its value."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    groups = [str(g) for g in frame[group].unique(maintain_order=True).to_list()]
    models = list(models) if models is not None else frame["model"].unique().to_list()
    width = 0.8 / max(len(models), 1)
    size = min(16.0, max(7.0, 0.22 * len(groups) * len(models) + 2.5))
    figure = new_figure(figsize=(size, 5.0), layout="constrained")
    axes = figure.subplots()
    for number, model in enumerate(models):
        rows = frame.filter(pl.col("model") == model)
        lookup = dict(zip(rows[group].cast(pl.String), rows["perplexity"], strict=True))
        heights = [lookup.get(g, float("nan")) for g in groups]
        offsets = np.arange(len(groups)) + (number - (len(models) - 1) / 2) * width
        bars = axes.bar(offsets, heights, width=width, label=str(model))
        if len(groups) * len(models) <= 40:
            labels = [f"{h:.3g}" if math.isfinite(h) else "" for h in heights]
            axes.bar_label(bars, labels=labels, fontsize=7, rotation=90, padding=2)
    values = frame.filter(pl.col("model").is_in(models))["perplexity"].drop_nans().drop_nulls()
    if values.len() and values.max() / max(values.min(), 1e-12) > 20:
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(ScalarFormatter())
        axes.yaxis.set_minor_formatter(NullFormatter())
    axes.margins(y=0.15)
    axes.set_xticks(np.arange(len(groups)), groups, rotation=30 if len(groups) > 8 else 0)
    axes.set(xlabel=group, ylabel="perplexity (lower is better)", title=title or "")
    return save_bar_figure(figure, axes, path)


def save_bar_figure(figure: Any, axes: Any, path: str | Path, *, legend_columns: int = 0) -> Path:
    """Light horizontal grid, saved at 150 dpi; the legend outside on the right, or below
    the axes in `legend_columns` columns (wide figures keep their width for the bars)."""
    axes.grid(axis="y", alpha=0.3)
    if legend_columns:
        axes.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=legend_columns, frameon=False
        )
    else:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=150)
    return out
