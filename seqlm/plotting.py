"""How every seqlm figure is made: a `matplotlib.figure.Figure` of its own, labels literal.

Figures are built directly (`Figure` with an Agg canvas), never through `pyplot`, and
the backend is never switched: a notebook user's backend and pyplot's list of open
figures stay as they were, and nothing needs closing.

Labels are data (codes, syllables, bird and group names). Matplotlib would read a label
holding `$` as TeX math, so `$\\frac{$` made a figure fail with a parse error; the
functions that draw are decorated with `plain_text`, which turns `text.parse_math` off
while they run (matplotlib's `rc_context`, restored afterwards) so every label, tick
labels drawn at save time included, is drawn as the text it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

P = ParamSpec("P")
R = TypeVar("R")

# The keyword arguments of `Figure.subplots`; the others go to `Figure` itself, as in
# `pyplot.subplots`.
_SUBPLOTS_KEYWORDS = (
    "sharex",
    "sharey",
    "squeeze",
    "width_ratios",
    "height_ratios",
    "subplot_kw",
    "gridspec_kw",
)


def plain_text(draw: Callable[P, R]) -> Callable[P, R]:
    """Run `draw` with matplotlib's math parsing of text off, restoring it afterwards."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # matplotlib is imported here, not at module level: it is slow to import and
        # only the commands that draw need it.
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(**figure_kwargs: Any) -> Figure:
    """A `Figure` on its own Agg canvas (PNG/SVG output without any GUI or pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**figure_kwargs)
    FigureCanvasAgg(figure)
    return figure


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """`pyplot.subplots` without pyplot: a new figure and its axes.

    Keywords of `Figure.subplots` (sharex, gridspec_kw, ...) go to it; the rest
    (figsize, dpi, constrained_layout, ...) to the `Figure`."""
    grid_kwargs = {k: kwargs.pop(k) for k in _SUBPLOTS_KEYWORDS if k in kwargs}
    figure = new_figure(**kwargs)
    return figure, figure.subplots(nrows, ncols, **grid_kwargs)
