"""Saving shared by the analysis figures (PNG and SVG side by side) and the trust caution.

Figures themselves come from `seqlm.plotting` (a `Figure` of their own, never pyplot)."""

from __future__ import annotations

from pathlib import Path

FIGURE_FORMATS = ("png", "svg")


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


def add_caution(figure, text: str, width: int = 110) -> None:
    """Write `text` (a trust warning, `TrustReport.caption()`) in red above the figure.

    Call it once the layout is final; the lines sit above the top edge, so save with
    `bbox_inches="tight"` to keep them. Long texts are broken at `width` characters
    (matplotlib's own wrapping pads the saved figure with blank space). Nothing is drawn
    for an empty text."""
    if not text:
        return
    import textwrap

    figure.text(
        0.5,
        1.005,
        "\n".join(textwrap.wrap(text, width)),
        ha="center",
        va="bottom",
        color="firebrick",
        fontsize=10,
        fontweight="bold",
    )
