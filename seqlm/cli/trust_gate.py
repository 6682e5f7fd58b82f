"""The interpretation gate as the analysis commands use it: check, warn on top, caption.

`seqlm attention maps|stats|span|heads` and `seqlm probe` call `interpretation_caution`
right after loading the run, before any analysis, so the warning is the first thing a
reader sees; the caption it returns goes on every figure they draw.
`seqlm.analysis.trust` is imported when the gate runs: it imports torch, which
`seqlm --help` should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

CheckOption = Annotated[
    bool,
    typer.Option(
        "--check/--no-check",
        help="First check that the model beats the baselines on held-out data and trained "
        "well; warn at the top and on every figure when it does not.",
    ),
]


def interpretation_caution(
    run: Path,
    corpus: Any,
    console: Console,
    *,
    check: bool = True,
    device: str = "cpu",
    weights: str = "auto",
) -> str:
    """Print the gate's warning (or a one-line all-clear) and return the figure caption
    ('' when the model may be interpreted or the check is off). `weights` is the
    analysis's choice (auto, best, latest): the gate checks the same weights."""
    from seqlm.analysis.trust import TrustOptions, interpretation_check

    if not check:
        return ""
    checkpoint = "latest" if weights == "latest" else "best"  # best falls back to latest
    report = interpretation_check(run, corpus, TrustOptions(device=device, checkpoint=checkpoint))
    if report.trusted:
        baseline = (report.comparison or {}).get("baseline", "the baselines")
        console.print(
            Text(f"checked: the model beats {baseline} on held-out data ({report.source})")
        )
        return ""
    console.print(
        Panel(
            Text("\n".join(report.lines())),
            title="WARNING: do not interpret this model",
            border_style="red",
            style="bold red",
        )
    )
    return report.caption()
