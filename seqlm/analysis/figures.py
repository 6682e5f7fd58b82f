"""Matplotlib set-up shared by the analysis figures: a headless backend, and saving every
figure as PNG and SVG side by side."""

from __future__ import annotations

from pathlib import Path

FIGURE_FORMATS = ("png", "svg")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed, nothing pops up)."""
    from seqlm.plotting import plain_matplotlib

    plain_matplotlib()
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, out_stem: str | Path, dpi: int) -> list[Path]:
    """Write `figure` to `out_stem`.png (at `dpi`) and `out_stem`.svg; returns the paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in FIGURE_FORMATS:
        path = out_stem.with_name(f"{out_stem.name}.{suffix}")
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths
