"""The matplotlib set-up every seqlm figure uses: headless, and labels taken literally.

Labels are data (codes, syllables, bird and group names). Matplotlib would read a label
holding `$` as TeX math, so `$\\frac{$` made a figure fail with a parse error; with
`text.parse_math` off every label is drawn as the text it is.
"""

from __future__ import annotations

from typing import Any


def plain_matplotlib() -> Any:
    """The `matplotlib` module on the Agg backend with math parsing of text off."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    return matplotlib
