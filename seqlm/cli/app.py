"""The typer application and its error handling.

Each command group lives in its own module with a `register(app)` function; this module
only assembles them and turns `SeqlmError`s into one-line messages with exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Annotated

import typer

from seqlm import __version__
from seqlm.artefacts import VERIFY_ENV
from seqlm.errors import Notice, SeqlmError
from seqlm.outputs import release_claims

app = typer.Typer(
    name="seqlm",
    help="Language models of structured event streams: ingest, train, evaluate, inspect. "
    "Add --verify to any command to re-hash every corpus and checkpoint file it opens "
    "(by default files whose size and time are as recorded are trusted).",
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
    "seqlm.cli.task",
)


def _print_version(value: bool) -> None:
    if value:
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
    """Console entry point: run the app; every failure is one line on stderr.

    Mistakes a user can make (usage, bad input, unwritable outputs, a full disk) exit 2;
    anything else is an internal error (exit 1). `--debug` shows the traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    warnings.showwarning = _show_warning
    if "--verify" in args:  # any command: re-hash every artefact it opens
        args.remove("--verify")
        os.environ[VERIFY_ENV] = "1"
    try:
        code = app(args=args, standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as err:
        if debug and not _is_usage_error(err):
            raise
        message, code = describe_failure(err)
        if message:
            typer.secho(message, fg=typer.colors.RED, err=True)
        sys.exit(code)
    finally:
        release_claims()
    # typer returns the code of a `typer.Exit` (e.g. torchrun's) instead of exiting.
    if isinstance(code, int) and code:
        sys.exit(code)


def describe_failure(err: BaseException) -> tuple[str, int]:
    """The one line and exit code the CLI gives for an exception."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", 130
    if type(err).__name__ == "NoArgsIsHelpError":
        err.show()  # type: ignore[attr-defined]  # the help text, as asked for
        return "", 0
    if _is_usage_error(err):
        return _usage_line(err), 2
    if _is_exception(err, "Abort"):
        return "aborted", 1
    if _is_exception(err, "Exit"):
        return "", int(getattr(err, "exit_code", 0) or 0)
    if isinstance(err, SeqlmError):
        return f"error: {_one_line(str(err))}", 2
    if isinstance(err, MemoryError):
        return "error: out of memory", 2
    if isinstance(err, OSError):
        return f"error: {_os_error_line(err)}", 2
    if type(err).__name__ == "SafetensorError":
        return f"error: safetensors: {_one_line(str(err))}", 2
    return (
        f"internal error: {type(err).__name__}: {_one_line(str(err))} "
        "(rerun with --debug for the traceback, and please report it)",
        1,
    )


def _exception_classes(name: str) -> tuple[type, ...]:
    """click's class `name` and the copy typer >= 0.26 vendors (typer._click)."""
    classes = []
    for module in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(found, type):
            classes.append(found)
    return tuple(classes)


def _is_exception(err: BaseException, name: str) -> bool:
    return isinstance(err, _exception_classes(name))


def _is_usage_error(err: BaseException) -> bool:
    return _is_exception(err, "ClickException")


def _usage_line(err: BaseException) -> str:
    message = _one_line(err.format_message())  # type: ignore[attr-defined]
    ctx = getattr(err, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"error: {message}{hint}"


def _os_error_line(err: OSError) -> str:
    reason = err.strerror or _one_line(str(err)) or type(err).__name__
    if err.filename is not None:
        return f"{err.filename}: {reason}"
    return reason


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as one line on stderr (not Python's two-line format with source)."""
    label = "note" if issubclass(category, Notice) else "warning"
    typer.secho(f"{label}: {_one_line(str(message))}", fg=typer.colors.YELLOW, err=True)


if __name__ == "__main__":
    main()
