"""Figures of the corpus attention statistics (PNG at 300 dpi and SVG).

- `mean_distance`: mean attention distance of every head against its layer, with the
  uniform-attention baseline (what a head spreading its mass evenly would give);
- `entropy`: entropy per head (nats) and normalised by log of the visible keys;
- `mass_by_distance`: per layer, attention mass per token of distance for each head
  against distance, with the uniform baseline dashed (mass / bin width, so wide bins
  far out compare with the unit bins near 0);
- `mass_by_time` and `mean_elapsed` (corpora with times): the same by elapsed seconds,
  mass per log-spaced bin.

They read the tables of `stats_tables`, so plots can be redrawn from saved parquet files.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.analysis.figures import save_figure
from seqlm.analysis.stats_bins import time_axis_unit
from seqlm.analysis.stats_tables import mass_density
from seqlm.plotting import plain_text, subplots

DPI = 300  # the default; every plot function takes `dpi=`
RATIO_TICKS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    0.7,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
)


# Coarser tick sets for taller ranges; `ratio_ticks` takes the finest that stays legible.
RATIO_TICK_SETS = (
    RATIO_TICKS,
    (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
    (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
    (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
)
MAX_RATIO_TICKS = 7
MIN_TICK_GAP = 0.09  # of the axis height in log units; closer labels overlap at 10 pt


def ratio_ticks(low: float, high: float) -> tuple[float, ...]:
    """The ticks of the finest set whose labels fit a ratio axis spanning [low, high];
    empty when none of the plain ratios lies inside (then matplotlib's own locator)."""
    low, high = max(low, 1e-12), max(high, 1e-12)
    span = max(math.log10(high / low), 1e-9) if high > low else 1.0
    for ticks in RATIO_TICK_SETS:
        inside = [t for t in ticks if low <= t <= high]
        gaps = [math.log10(b / a) / span for a, b in itertools.pairwise(inside)]
        if len(inside) <= MAX_RATIO_TICKS and min(gaps, default=1.0) >= MIN_TICK_GAP:
            return tuple(inside)
    return tuple(t for t in RATIO_TICK_SETS[-1] if low <= t <= high)


def _head_colours(n_heads: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n_heads <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n_heads)]


@plain_text
def _per_layer_pairs(n_layers: int, width: float = 4.2):
    """Two stacked axes per layer (values on top, ratio to uniform below), 4 layers a row."""
    columns = min(n_layers, 4)
    rows = math.ceil(n_layers / columns)
    figure, axes = subplots(
        2 * rows,
        columns,
        figsize=(width * columns, 5.4 * rows + 0.6),
        squeeze=False,
        constrained_layout=True,
        gridspec_kw={"height_ratios": [3, 2] * rows},
    )
    pairs = [
        (axes[2 * (i // columns)][i % columns], axes[2 * (i // columns) + 1][i % columns])
        for i in range(n_layers)
    ]
    for i in range(n_layers, rows * columns):
        axes[2 * (i // columns)][i % columns].axis("off")
        axes[2 * (i // columns) + 1][i % columns].axis("off")
    return figure, pairs


@plain_text
def _curves_by_layer(
    table: pl.DataFrame,
    value: str,
    uniform: str,
    x_of,
    *,
    xscale: tuple,
    xlabel: str,
    ylabel: str,
    title: str,
    out_stem: Path,
    dpi: int,
) -> list[Path]:
    """Per layer: `value` per head against x with the uniform baseline dashed (log y),
    and below it value / uniform (1 = no preference for that distance)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    layers = sorted(table["layer"].unique().to_list())
    n_heads = int(table["head"].max()) + 1
    colours = _head_colours(n_heads)
    figure, pairs = _per_layer_pairs(len(layers))
    for (top, ratio), layer in zip(pairs, layers, strict=True):
        rows = table.filter(pl.col("layer") == layer)
        base = rows.filter(pl.col("head") == 0)
        for head in range(n_heads):
            part = rows.filter(pl.col("head") == head)
            x, y = x_of(part), part[value].to_numpy()
            style = {"marker": "o", "markersize": 2.5, "linewidth": 1.2, "color": colours[head]}
            top.plot(x, y, label=f"head {head}", **style)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio.plot(x, y / part[uniform].to_numpy(), **style)
        top.plot(x_of(base), base[uniform], "k--", linewidth=1.2, label="uniform attention")
        ratio.axhline(1.0, color="k", linestyle="--", linewidth=1.2)
        positive = rows[value].filter(rows[value] > 0)
        if len(positive):
            # keep four decades below the top: the far tail is a handful of long
            # sequences and would squash the informative part into one line
            highest = float(positive.max())
            top.set_ylim(max(float(positive.min()), highest * 1e-4) / 1.5, highest * 1.5)
        for axes in (top, ratio):
            axes.set_xscale(*xscale[:1], **xscale[1])
            axes.set_yscale("log")
            axes.grid(alpha=0.3, which="both")
        if xscale[0] == "symlog":
            # plain distances (0, 4, 8, 16, 32 ...) instead of 10^k on the token axis
            farthest = float(np.nanmax(x_of(rows))) if rows.height else 16.0
            distance_ticks = [0, 4, 8] + [2**k for k in range(4, 20) if 2**k <= farthest * 1.2]
            for axes in (top, ratio):
                axes.set_xlim(left=-0.5)
                axes.xaxis.set_major_locator(FixedLocator(distance_ticks))
                axes.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
                axes.xaxis.set_minor_locator(NullLocator())
        # plain ratios (0.5, 1, 2 ...) read better than powers of ten, and a fixed
        # handful of ticks keeps drawing fast
        ticks = ratio_ticks(*ratio.get_ylim())
        if ticks:
            ratio.yaxis.set_major_locator(FixedLocator(ticks))
            ratio.yaxis.set_major_formatter(lambda value, _: f"{value:g}")
            ratio.yaxis.set_minor_locator(NullLocator())
        top.set_title(f"layer {layer}")
        top.set_ylabel(ylabel)
        ratio.set_ylabel("ratio to uniform (1 = none)")
        ratio.set_xlabel(xlabel)
    figure.suptitle(title)
    _legend(figure, pairs[0][0])
    return save_figure(figure, out_stem, dpi)


def _scatter_by_layer(
    axes, heads: pl.DataFrame, column: str, baseline: str | None, label: str
) -> None:
    n_heads = int(heads["head"].max()) + 1
    colours = _head_colours(n_heads)
    spread = 0.5 / max(n_heads, 1)
    for head in range(n_heads):
        rows = heads.filter(pl.col("head") == head).sort("layer")
        x = rows["layer"].to_numpy() + (head - (n_heads - 1) / 2) * spread
        axes.scatter(
            x, rows[column].to_numpy(), color=colours[head], s=28, label=f"head {head}", zorder=3
        )
    if baseline is not None:
        per_layer = heads.group_by("layer").agg(pl.col(baseline).first()).sort("layer")
        layers = per_layer["layer"].to_numpy()
        axes.hlines(
            per_layer[baseline].to_numpy(),
            layers - 0.35,
            layers + 0.35,
            colors="k",
            linestyles="--",
            linewidth=1.2,
            label="uniform attention (this layer)",
            zorder=2,
        )
    axes.set_xticks(sorted(heads["layer"].unique().to_list()))
    axes.set_xlabel("layer")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)


def _legend(figure, axes) -> None:
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 6),
        fontsize=8,
        frameon=False,
    )


@plain_text
def _plot_means(
    heads: pl.DataFrame,
    value: str,
    baseline: str,
    ylabel: str,
    subtitle: str,
    out_stem: Path,
    *,
    log: bool,
    title: str,
    dpi: int,
) -> list[Path]:
    """One panel: `value` per head against layer, the uniform `baseline` per layer.
    A head without a finite value cannot be drawn: the title says which (and a warning),
    so a figure never shows fewer heads than the model has without saying so."""
    subtitle = _note_hidden_heads(heads, value, subtitle)
    heads = heads.filter(pl.col(value).is_finite())
    figure, axes = subplots(figsize=(7, 4.2), constrained_layout=True)
    _scatter_by_layer(axes, heads, value, baseline, ylabel)
    highest = float(max(heads[value].max(), heads[baseline].max()) or 1.0)
    if log and _spans_decades(heads, value, baseline):
        axes.set_yscale("log")
    else:
        # room above the top point, so no marker sits on the frame
        axes.set_ylim(0, 1.12 * highest)
    axes.set_title(f"{title}\n{subtitle}".strip(), fontsize=10)
    _legend(figure, axes)
    return save_figure(figure, out_stem, dpi)


def _note_hidden_heads(heads: pl.DataFrame, value: str, subtitle: str) -> str:
    """`subtitle` plus a line naming the heads whose `value` is not finite (or null)."""
    hidden = heads.filter(~pl.col(value).is_finite().fill_null(False))
    if hidden.is_empty():
        return subtitle
    names = ", ".join(f"L{layer}H{head}" for layer, head in hidden.select("layer", "head").rows())
    note = f"{hidden.height} of {heads.height} heads not shown (no finite {value}): {names}"
    warnings.warn(note, stacklevel=3)
    return f"{subtitle}\n{note}"


def _spans_decades(heads: pl.DataFrame, value: str, baseline: str) -> bool:
    """A log axis only for positive values spanning a decade or more: a narrow range
    (7.98-8.05 s) on a log axis reads as large differences with unreadable ticks."""
    values = pl.concat([heads[value], heads[baseline]]).drop_nulls()
    if values.is_empty() or not (values > 0).all():
        return False
    return float(values.max()) >= 10 * float(values.min())


def plot_mean_distance(
    heads: pl.DataFrame, out_stem: Path, *, title: str = "", dpi: int = DPI
) -> list[Path]:
    """Mean attention distance (tokens) per head vs layer, with the uniform baseline."""
    return _plot_means(
        heads,
        "mean_distance",
        "uniform_mean_distance",
        "mean attention distance (tokens)",
        "mean distance of data keys attended (BOS/EOS/PAD excluded)",
        out_stem,
        log=False,
        title=title,
        dpi=dpi,
    )


@plain_text
def plot_entropy(
    heads: pl.DataFrame, out_stem: Path, *, title: str = "", dpi: int = DPI
) -> list[Path]:
    """Entropy (nats) and normalised entropy (1 = uniform) per head vs layer."""
    figure, (raw, normalised) = subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    _scatter_by_layer(raw, heads, "entropy", None, "entropy (nats)")
    _scatter_by_layer(normalised, heads, "normalized_entropy", None, "entropy / log(visible keys)")
    normalised.axhline(1.0, color="k", linestyle="--", linewidth=1, label="uniform attention")
    normalised.set_ylim(0, 1.05)
    raw.set_ylim(0, 1.12 * float(heads["entropy"].max() or 1.0))
    figure.suptitle(f"{title} attention entropy per head".strip())
    _legend(figure, normalised)
    return save_figure(figure, out_stem, dpi)


def plot_mass_by_distance(
    distance: pl.DataFrame, out_stem: Path, *, title: str = "", dpi: int = DPI
) -> list[Path]:
    """Per layer: mass per token of distance vs distance, a line per head, uniform dashed,
    and the ratio to uniform below."""
    table = mass_density(distance, "bin_start", "bin_stop").sort("layer", "head", "bin_start")
    return _curves_by_layer(
        table,
        "density",
        "uniform_density",
        # a bin's representative distance: the distance itself for unit bins, else the middle
        lambda part: ((part["bin_start"] + part["bin_stop"] - 1) / 2).to_numpy(),
        xscale=("symlog", {"linthresh": 16, "linscale": 1.0}),
        xlabel="token distance (linear to 16, log beyond)",
        ylabel="attention mass per token of distance",
        title=f"{title} attention mass by token distance (BOS/EOS/PAD excluded)".strip(),
        out_stem=out_stem,
        dpi=dpi,
    )


def _time_x(table: pl.DataFrame) -> np.ndarray:
    """Where to draw each time bin on a log axis: the geometric middle; [0, e1) at e1 / 2
    and the open last bin at 1.5 x its start."""
    start = table["bin_start_s"].to_numpy()
    stop = table["bin_stop_s"].to_numpy()
    x = np.sqrt(np.where(start > 0, start, 1.0) * np.where(np.isfinite(stop), stop, 1.0))
    x = np.where(start == 0, stop / 2, x)
    return np.where(np.isfinite(stop), x, start * 1.5)


def plot_mass_by_time(
    times: pl.DataFrame, out_stem: Path, *, title: str = "", dpi: int = DPI, time_unit: str = "s"
) -> list[Path]:
    """Per layer: mass per elapsed-time bin vs time (log), a line per head, uniform
    dashed, and the ratio to uniform below. `time_unit` "index" labels unitless time."""
    return _curves_by_layer(
        times.sort("layer", "head", "bin_start_s"),
        "mass",
        "uniform_mass",
        _time_x,
        xscale=("log", {}),
        xlabel=f"elapsed time between query and key ({time_axis_unit(time_unit)}, log)",
        ylabel="attention mass per time bin",
        title=f"{title} attention mass by elapsed time (log-spaced bins)".strip(),
        out_stem=out_stem,
        dpi=dpi,
    )


def plot_mean_elapsed(
    heads: pl.DataFrame, out_stem: Path, *, title: str = "", dpi: int = DPI, time_unit: str = "s"
) -> list[Path]:
    """Mean elapsed time between query and attended keys, per head vs layer (a log axis
    only when the values span a decade or more)."""
    return _plot_means(
        heads,
        "mean_elapsed_s",
        "uniform_mean_elapsed_s",
        f"mean elapsed time ({time_axis_unit(time_unit)})",
        "mean elapsed time to attended data keys (BOS/EOS/PAD excluded)",
        out_stem,
        log=True,
        title=title,
        dpi=dpi,
    )


def write_stats_plots(
    heads: pl.DataFrame,
    distance: pl.DataFrame,
    times: pl.DataFrame | None,
    out: str | Path,
    *,
    title: str = "",
    dpi: int = DPI,
    time_unit: str = "s",
) -> dict[str, list[Path]]:
    """Every figure into `out` (PNG at `dpi`, and SVG); returns {figure name: [png, svg]}.
    `time_unit` ("s" or "index") labels the time axes."""
    out = Path(out)
    common = {"title": title, "dpi": dpi}
    written = {
        "mean_distance": plot_mean_distance(heads, out / "mean_distance", **common),
        "entropy": plot_entropy(heads, out / "entropy", **common),
        "mass_by_distance": plot_mass_by_distance(distance, out / "mass_by_distance", **common),
    }
    if times is not None and "mean_elapsed_s" in heads.columns:
        timed = {**common, "time_unit": time_unit}
        written["mass_by_time"] = plot_mass_by_time(times, out / "mass_by_time", **timed)
        written["mean_elapsed"] = plot_mean_elapsed(heads, out / "mean_elapsed", **timed)
    return written
