"""Every command's `--help` text, and the `docs/cli/*.md` pages regenerated from it.

The pages keep their hand-written prose; each `## seqlm <command>` section's code block is
the command's help at a fixed width, so the docs cannot drift from the CLI. Regenerate
with `python -m seqlm.cli.help_docs` after changing a command's options.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

HELP_WIDTH = 100
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "cli"
_SECTION = re.compile(r"^## (seqlm(?: [\w-]+)*)\n\n```\n.*?```\n", re.MULTILINE | re.DOTALL)


def root_command() -> Any:
    """The click command behind `seqlm`."""
    from seqlm.cli.app import app

    return typer.main.get_command(app)


def command_paths(command: Any = None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group below `seqlm`, as word tuples (`("attention", "maps")`)."""
    command = command or root_command()
    paths: list[tuple[str, ...]] = []
    if hasattr(command, "list_commands"):  # a group (typer bundles its own click)
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            paths.append((*prefix, name))
            paths.extend(command_paths(sub, (*prefix, name)))
    return paths


def resolve(path: tuple[str, ...]) -> tuple[Any, Any]:
    """The command at `path` and a context chain as the CLI builds it (for help text)."""
    command = root_command()
    ctx = command.context_class(command, info_name="seqlm", max_content_width=HELP_WIDTH)
    ctx.terminal_width = HELP_WIDTH
    for name in path:
        sub = command.get_command(ctx, name)  # type: ignore[attr-defined]
        if sub is None:
            raise KeyError(" ".join(path))
        ctx = sub.context_class(sub, info_name=name, parent=ctx, max_content_width=HELP_WIDTH)
        ctx.terminal_width = HELP_WIDTH
        command = sub
    return command, ctx


def help_text(path: tuple[str, ...]) -> str:
    """`seqlm PATH --help` at the docs' width."""
    command, ctx = resolve(path)
    return command.get_help(ctx).rstrip() + "\n"


def source_help_strings(path: tuple[str, ...]) -> list[str]:
    """The help strings as written in the code (docstring and each parameter's help)."""
    command, _ = resolve(path)
    strings = [command.help or ""]
    strings += [getattr(param, "help", None) or "" for param in command.params]
    return [s for s in strings if s]


def regenerate(docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Rewrite the help blocks of every page in `docs_dir`; returns the pages changed."""
    changed = []
    for page in sorted(docs_dir.glob("*.md")):
        text = page.read_text(encoding="utf-8")

        def block(match: re.Match) -> str:
            path = tuple(match.group(1).split()[1:])
            return f"## {match.group(1)}\n\n```\n{help_text(path)}```\n"

        new = _SECTION.sub(block, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


def documented(docs_dir: Path = DOCS_DIR) -> dict[tuple[str, ...], str]:
    """The help block of each documented command, by command path."""
    found = {}
    for page in sorted(docs_dir.glob("*.md")):
        for match in _SECTION.finditer(page.read_text(encoding="utf-8")):
            body = match.group(0).split("```\n", 1)[1].rsplit("```", 1)[0]
            found[tuple(match.group(1).split()[1:])] = body
    return found


if __name__ == "__main__":
    for written in regenerate(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_DIR):
        print(f"rewrote {written}")
