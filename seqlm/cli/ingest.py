"""`seqlm ingest` and `seqlm adapters`.

`seqlm.ingest` and `seqlm.corpus` are imported inside `ingest_command`: they pull in the
corpus writer, which `seqlm --help` and the other commands should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from seqlm.cli.progress_bar import RichProgress
from seqlm.cli.settings_table import print_settings
from seqlm.corpora_adapters import get_adapter, registered_adapters
from seqlm.settings_help import describe, nested_tables


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
            help="key=value (TOML literal): adapter options (`seqlm adapters NAME`); "
            "`scheme.X=` and `splits.X=` set those tables (`seqlm config show`).",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace a corpus seqlm wrote at --out (never any other folder)."
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes for the corpus build (default: the cores; one for small inputs).",
        ),
    ] = None,
    within_time_order: Annotated[
        str,
        typer.Option(
            "--within-time-order",
            help="Order of an entity's events that share a timestamp: file (as the source "
            "has them; MEDS defines none) or code (sorted by code, then value and text). "
            "docs/formats.md, 'Events that share a timestamp'.",
        ),
    ] = "file",
) -> None:
    """Read raw event files with an adapter and write a tokenized corpus folder."""
    from seqlm.corpus.merge_checks import describe_merge_checks
    from seqlm.ingest import ingest, resolve_ingest_config

    sections = resolve_ingest_config(config, option or [])
    progress = RichProgress()
    try:
        corpus = ingest(
            adapter,
            inputs,
            out,
            sections,
            overwrite=overwrite,
            workers=workers,
            progress=progress,
            within_time_order=within_time_order,
        )
    finally:
        progress.finish()
    counts = corpus.manifest.get("counts", {})
    console = Console()
    console.print(f"[bold green]corpus written[/] to {escape(str(corpus.path))}")
    for key in ("rows_read", "events", "rejects", "sequences", "tokens"):
        if key in counts:
            console.print(f"  {key:>10}: {counts[key]:,}")
    console.print(f"  vocabulary: {corpus.vocab_size:,} tokens")
    if (order := corpus.manifest.get("within_time_order", "file")) != "file":
        console.print(f"  events of one timestamp in {order} order (--within-time-order)")
    for line in corpus.manifest.get("notes", []):
        console.print(Text(f"note: {line}"))
    for line in describe_merge_checks(corpus.manifest.get("merge_checks", {})):
        console.print(Text(line, style="yellow"))
    console.print(Text(f"next: seqlm corpus info {corpus.path}"))


def adapters_command(
    name: Annotated[
        str | None, typer.Argument(help="Show the options of this adapter only.")
    ] = None,
) -> None:
    """List the adapters and their options: type, default and meaning of each."""
    specs = [get_adapter(name)] if name else list(registered_adapters().values())
    console = Console(highlight=False)
    for spec in specs:
        console.print(Text.assemble((spec.name, "bold"), "  ", spec.description))
        if spec.aliases:
            console.print(Text(f"  also accepted as: {', '.join(spec.aliases)}"))
        print_settings(console, describe(spec.options))
        for key, cls in nested_tables(spec.options).items():
            console.print(Text(f"  [adapter.{key}] table:", style="bold"))
            print_settings(console, describe(cls), indent="    ")
        if spec.scheme_defaults:
            defaults = ", ".join(f"{k}={v!r}" for k, v in spec.scheme_defaults.items())
            console.print(Text(f"  token-scheme defaults: {defaults}"))
        if spec.split_defaults:
            defaults = ", ".join(f"{k}={v!r}" for k, v in spec.split_defaults.items())
            console.print(Text(f"  split defaults: {defaults}"))
        console.print()
    console.print(Text("seqlm config show lists the [scheme] and [splits] keys."))


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.command("adapters")(adapters_command)
