"""`seqlm export RUN --format hf --out DIR`.

`seqlm.export.hf` is imported inside the command: it imports torch, which `seqlm --help`
and every other command should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from seqlm.errors import ConfigError


def export_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")],
    format_: Annotated[
        str, typer.Option("--format", "-f", help="Target format: hf (Hugging Face GPT-2).")
    ] = "hf",
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="Which weights: best or latest.")
    ] = "best",
) -> None:
    """Export a trained model for another ecosystem (Hugging Face transformers)."""
    from seqlm.export.hf import FORMATS, export_hf

    if format_ not in FORMATS:
        raise ConfigError(f"unknown export format {format_!r}; available: {', '.join(FORMATS)}")
    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"--checkpoint must be best or latest, got {checkpoint!r}")
    folder = export_hf(run, out, which=checkpoint)
    console = Console()
    console.print(f"[bold green]exported[/] to {escape(str(folder))}")
    console.print(
        "  load with: AutoModelForCausalLM.from_pretrained(folder), "
        "PreTrainedTokenizerFast.from_pretrained(folder)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
