"""The typer application and its error handling.

Each command group lives in its own module with a `register(app)` function; this module
only assembles them and turns `SeqlmError`s into one-line messages with exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from seqlm.errors import SeqlmError

app = typer.Typer(
    name="seqlm",
    help="Language models of structured event streams: ingest, train, evaluate, inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)

# Modules with a `register(app)` function, one per command group.
COMMAND_MODULES: tuple[str, ...] = (
    "seqlm.cli.ingest",
    "seqlm.cli.corpus",
    "seqlm.cli.train",
    "seqlm.cli.evaluate",
    "seqlm.cli.attention",
    "seqlm.cli.attention_experiments",
    "seqlm.cli.quickstart",
    "seqlm.cli.export",
    "seqlm.cli.efficiency",
    "seqlm.cli.config",
)


def _print_version(value: bool) -> None:
    if value:
        from seqlm import __version__

        typer.echo(f"seqlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Language models of structured event streams: ingest, train, evaluate, inspect."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, print project errors as one line, exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        app(args=args, standalone_mode=False)
    except SeqlmError as err:
        if debug:
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # click's usage errors and the like
        # typer bundles its own copy of click, so match click's exceptions by class name.
        names = {cls.__name__ for cls in type(err).__mro__}
        if "ClickException" in names:
            err.show()  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        if "Abort" in names:
            sys.exit(1)
        if "Exit" in names:
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        raise


if __name__ == "__main__":
    main()
