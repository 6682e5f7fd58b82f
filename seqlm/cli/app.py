"""The typer application and its error handling.

Each command group lives in its own module with a `register(app)` function; this module
only assembles them and turns `SeqlmError`s into one-line messages with exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from seqlm.artefacts import VERIFY_ENV
from seqlm.errors import SeqlmError

app = typer.Typer(
    name="seqlm",
    help="Language models of structured event streams: ingest, train, evaluate, inspect. "
    "Add --verify to any command to re-hash every corpus and checkpoint file it opens "
    "(by default files whose size and time are as recorded are trusted).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, print project errors as one line, exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    if "--verify" in args:  # any command: re-hash every artefact it opens
        args.remove("--verify")
        os.environ[VERIFY_ENV] = "1"
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
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
