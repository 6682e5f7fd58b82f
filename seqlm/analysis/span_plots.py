"""Figures of the context-length sweep: loss against window, and the perplexity gain
with the effective context length per group."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from seqlm.analysis.figures import add_caution
from seqlm.analysis.span_sweep import ALL_GROUPS, SPAN, TRUNCATION, SpanSweep
from seqlm.errors import ConfigError
from seqlm.plotting import plain_text, subplots

FIGURE_DPI = 300  # print resolution, like the maps and the statistics figures


def _save(figure, out: Path, dpi: int) -> None:
    """The PNG at `out` and a vector copy beside it for papers."""
    figure.savefig(out, dpi=dpi, bbox_inches="tight")
    if out.suffix.lower() == ".png":
        figure.savefig(out.with_suffix(".svg"), bbox_inches="tight")


def _window_axis(axes, windows: Sequence[int]) -> None:
    axes.set_xscale("log", base=2)
    axes.set_xticks(list(windows))
    axes.set_xticklabels([str(w) for w in windows])
    axes.minorticks_off()


@plain_text
def plot_loss_vs_window(
    sweep: SpanSweep,
    out: str | Path,
    group: str = ALL_GROUPS,
    *,
    dpi: int = FIGURE_DPI,
    caution: str = "",
) -> Path:
    """Loss against window w for span masks and truncation, with the full-context line
    and the effective context length marked (PNG at `dpi`, and an SVG beside it);
    `caution` (a trust warning) is written in red above it."""
    part = sweep.table.filter(pl.col("group") == group)
    if part.height == 0:
        raise ConfigError(f"no sweep results for group {group!r}")
    out = Path(out)
    figure, axes = subplots(figsize=(7.5, 4.5), dpi=130)
    styles = {
        SPAN: ("o-", "span mask (whole sequence fed)"),
        TRUNCATION: ("s-", "truncation (only the last w tokens fed)"),
    }
    for mode in sweep.config.modes:
        rows = part.filter(pl.col("mode") == mode).sort("window")
        marker, label = styles[mode]
        axes.plot(rows["window"], rows["loss"], marker, label=label, linewidth=1.5)
    full_loss = float(part["full_loss"][0])
    axes.axhline(full_loss, color="black", linestyle="--", linewidth=1.0)
    windows = sorted(set(part["window"].to_list()))
    axes.annotate(
        f"full context {full_loss:.3f}",
        (windows[0], full_loss),
        textcoords="offset points",
        xytext=(0, 6),
        fontsize=9,
    )
    effective = sweep.effective.get(group)
    if effective is not None and TRUNCATION in sweep.config.modes:
        axes.axvline(effective, color="tab:green", linestyle=":", linewidth=1.2)
        axes.annotate(
            f"effective context {effective} ",
            (effective, (full_loss + axes.get_ylim()[1]) / 2),
            textcoords="offset points",
            xytext=(-4, 0),
            ha="right",
            fontsize=9,
            color="tab:green",
        )
    _window_axis(axes, windows)
    axes.set_xlabel("window w (tokens)")
    axes.set_ylabel("loss (nats per token)")
    tokens, sequences = int(part["tokens"][0]), int(part["sequences"][0])
    title = "all sequences" if group == ALL_GROUPS else group
    axes.set_title(
        f"Loss vs context window: {title} ({tokens:,} tokens, {sequences:,} sequences, "
        f"{sweep.n_layer} layers)",
        fontsize=10,
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=9)
    figure.tight_layout()
    add_caution(figure, caution)
    _save(figure, out, dpi)
    return out


# Perplexity-gain ticks (%) on the symmetric-log axis: plain numbers, not powers of ten.
_GAIN_TICKS = [-100, -10, -1, 0, 1, 10, 100, 1000, 10000]


@plain_text
def plot_effective_context(
    sweep: SpanSweep, out: str | Path, *, dpi: int = FIGURE_DPI, caution: str = ""
) -> Path:
    """One panel per group: perplexity gain of truncation to w over full context (%),
    its bootstrap band, the threshold, and the effective context length (PNG at `dpi`,
    and an SVG beside it); `caution` (a trust warning) is written in red above it."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    part = sweep.table.filter(pl.col("mode") == TRUNCATION)
    if part.height == 0:
        raise ConfigError("the sweep has no truncation results")
    groups = sorted(set(part["group"].to_list()) - {ALL_GROUPS}) or [ALL_GROUPS]
    if len(groups) > 1:
        groups = [ALL_GROUPS, *groups]
    columns = min(4, len(groups))
    n_rows = -(-len(groups) // columns)
    out = Path(out)
    figure, grid = subplots(
        n_rows,
        columns,
        figsize=(3.4 * columns, 2.9 * n_rows),
        dpi=130,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    threshold = 100 * sweep.config.threshold
    for axes, group in zip(grid.flat, groups, strict=False):
        rows = part.filter(pl.col("group") == group).sort("window")
        windows = rows["window"].to_numpy()
        axes.fill_between(
            windows,
            100 * rows["gain_low"].to_numpy(),
            100 * rows["gain_high"].to_numpy(),
            alpha=0.25,
            label=f"{sweep.config.percentile:g}-{100 - sweep.config.percentile:g}th pct",
        )
        axes.plot(windows, 100 * rows["perplexity_gain"].to_numpy(), "o-", markersize=3)
        axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0)
        effective = sweep.effective.get(group)
        if effective is not None:
            axes.axvline(effective, color="tab:green", linestyle=":", linewidth=1.2)
        axes.set_yscale("symlog", linthresh=threshold)
        axes.yaxis.set_major_locator(FixedLocator(_GAIN_TICKS))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        _window_axis(axes, windows.tolist())
        axes.tick_params(labelsize=8)
        label = "none in sweep" if effective is None else str(effective)
        axes.set_title(f"{group}: effective {label}", fontsize=9)
        axes.grid(alpha=0.3)
    for axes in grid.flat[len(groups) :]:
        axes.set_visible(False)
    for axes in grid[:, 0]:
        axes.set_ylabel("perplexity gain (%)", fontsize=9)
    for axes in grid[-1, :]:
        axes.set_xlabel("truncation w (tokens)", fontsize=9)
    figure.suptitle(
        f"Cost of truncating the context (band: bootstrap {sweep.config.percentile:g}th to "
        f"{100 - sweep.config.percentile:g}th percentile; red: {threshold:g}% threshold; "
        "green: effective context length)",
        fontsize=10,
    )
    figure.tight_layout()
    add_caution(figure, caution)
    _save(figure, out, dpi)
    return out
