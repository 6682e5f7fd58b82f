"""`seqlm config show`: every settings key with its type, default and meaning."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from seqlm.cli.settings_table import print_settings
from seqlm.settings_help import TABLES, aliases, table_rows


def config_show_command(
    preset: Annotated[
        str | None,
        typer.Option("--preset", "-p", help="Show the model defaults of this size preset."),
    ] = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="Only these tables: model, train, scheme, splits."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Every key of the [model], [train], [scheme] and [splits] settings: type, default,
    meaning. Set them with `seqlm train --set model.X=...` and `seqlm ingest --option
    scheme.X=...`; `seqlm adapters` lists each adapter's own options."""
    chosen = table or list(TABLES)
    rows = {name: table_rows(name, preset) for name in chosen}
    if as_json:
        data = {name: [row.__dict__ for row in table_rows_] for name, table_rows_ in rows.items()}
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console(highlight=False)
    where = {"model": "seqlm train --set", "train": "seqlm train --set"}
    for name, table_rows_ in rows.items():
        command = where.get(name, "seqlm ingest --option")
        console.print(f"[{name}]  ({command} {name}.KEY=VALUE)", markup=False, style="bold")
        print_settings(console, table_rows_)
        names = aliases(name)
        if names:
            text = ", ".join(f"{alias} = {key}" for alias, key in names.items())
            console.print(f"  aliases: {text}", markup=False)
        console.print()


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Settings keys and their defaults.", no_args_is_help=True)
    group.command("show")(config_show_command)
    app.add_typer(group, name="config")
