"""`seqlm quickstart`: the whole pipeline on the bundled finch data, with a progress bar.

`seqlm.studies.quickstart` is imported inside the command: it imports torch, which
`seqlm --help` and every other command should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from seqlm.cli.progress_bar import RichProgress


def quickstart_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder to write.")] = Path(
        "seqlm-quickstart"
    ),
    fast: Annotated[
        bool,
        typer.Option(
            "--fast", help="Sub-minute smoke version: a tiny model, numbers mean nothing."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace a quickstart folder seqlm wrote (never any other folder)."
        ),
    ] = False,
) -> None:
    """Ingest the bundled finch song, train a small model, evaluate, compare, report."""
    from seqlm.studies.quickstart import NEXT_COMMANDS, quickstart

    progress = RichProgress()
    try:
        result = quickstart(out, fast=fast, progress=progress, overwrite=overwrite)
    finally:
        progress.finish()
    console = Console()
    verdict = "beats" if result.model_beats_ngram else "does not beat"
    console.print(f"[bold green]report written[/]: {escape(str(result.report.resolve()))}")
    console.print(
        f"  held-out pre-lesion perplexity: model {result.model_perplexity:.3f} {verdict} "
        f"the best n-gram ({result.ngram_order}-gram) {result.ngram_perplexity:.3f}"
    )
    for comparison in result.headline_comparisons():
        console.print("  " + comparison["sentence"], markup=False, highlight=False)
    if result.caution:
        console.print("\n".join(result.caution), style="bold red", markup=False, highlight=False)
    console.print(f"  corpus {result.corpus}, run {result.run}, figures in {result.out}")
    console.print("The same on your own data:")
    for command in NEXT_COMMANDS:
        console.print(f"  {command}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_command)
