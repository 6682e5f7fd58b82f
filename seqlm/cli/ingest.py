"""`seqlm ingest` and `seqlm adapters`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from seqlm.cli.progress_bar import RichProgress


def ingest_command(
    adapter: Annotated[str, typer.Argument(help="Adapter name; `seqlm adapters` lists them.")],
    inputs: Annotated[
        list[Path], typer.Argument(help="Input files or folders, read by the adapter.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Corpus folder to write.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML file: adapter options, or [adapter], [scheme] and [splits] tables.",
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-O",
            help="key=value (TOML literal). `scheme.X=` and `splits.X=` set those parts.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing corpus folder.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes for the corpus build (default: the cores; one for small inputs).",
        ),
    ] = None,
) -> None:
    """Read raw event files with an adapter and write a tokenized corpus folder."""
    from seqlm.ingest import ingest, resolve_ingest_config

    sections = resolve_ingest_config(config, option or [])
    progress = RichProgress()
    try:
        corpus = ingest(
            adapter, inputs, out, sections, overwrite=overwrite, workers=workers, progress=progress
        )
    finally:
        progress.finish()
    counts = corpus.manifest.get("counts", {})
    console = Console()
    console.print(f"[bold green]corpus written[/] to {corpus.path}")
    for key in ("rows_read", "events", "rejects", "sequences", "tokens"):
        if key in counts:
            console.print(f"  {key:>10}: {counts[key]:,}")
    console.print(f"  vocabulary: {corpus.vocab_size:,} tokens")
    console.print(f"next: seqlm corpus info {corpus.path}")


def adapters_command(
    name: Annotated[
        str | None, typer.Argument(help="Show the options of this adapter only.")
    ] = None,
) -> None:
    """List the adapters and their options."""
    from seqlm.corpora_adapters import get_adapter, registered_adapters
    from seqlm.corpora_adapters.base import option_help

    specs = [get_adapter(name)] if name else list(registered_adapters().values())
    console = Console()
    for spec in specs:
        console.print(f"[bold]{spec.name}[/]  {spec.description}")
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        table.add_column("option")
        table.add_column("type")
        table.add_column("default")
        for option_name, type_name, default in option_help(spec.options):
            table.add_row(option_name, type_name, default)
        console.print(table)
        if spec.scheme_defaults:
            defaults = ", ".join(f"{k}={v!r}" for k, v in spec.scheme_defaults.items())
            console.print(f"  token-scheme defaults: {defaults}")
        console.print()


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.command("adapters")(adapters_command)
