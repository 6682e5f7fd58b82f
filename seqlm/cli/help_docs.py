"""Every command's `--help` text, and the `docs/cli/*.md` pages regenerated from it;
`docs/settings.md` lists every settings key and adapter option.

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

from seqlm.cli.app import app
from seqlm.corpora_adapters import registered_adapters
from seqlm.settings_help import TABLES, describe, nested_tables, table_rows

HELP_WIDTH = 100
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "cli"
_SECTION = re.compile(r"^## (seqlm(?: [\w-]+)*)\n\n```\n.*?```\n", re.MULTILINE | re.DOTALL)


def root_command() -> Any:
    """The click command behind `seqlm`."""
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
    settings = docs_dir.parent / SETTINGS_PAGE
    if not settings.is_file() or settings.read_text(encoding="utf-8") != settings_markdown():
        settings.write_text(settings_markdown(), encoding="utf-8")
        changed.append(settings)
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


SETTINGS_PAGE = "settings.md"


def settings_markdown() -> str:
    """Every settings key and adapter option as markdown tables (docs/settings.md)."""
    lines = [
        "# Settings and adapter options",
        "",
        "Generated from the settings dataclasses by `python -m seqlm.cli.help_docs`; the",
        "same lists print with `seqlm config show` and `seqlm adapters NAME`.",
        "",
    ]
    for table in TABLES:
        where = "seqlm train --set" if table in ("model", "train") else "seqlm ingest --option"
        lines += [f"## [{table}]", "", f"Set with `{where} {table}.KEY=VALUE`.", ""]
        lines += _rows_markdown(table_rows(table))
    for spec in registered_adapters().values():
        lines += [f"## Adapter `{spec.name}`", "", _md(spec.description), ""]
        if spec.aliases:
            lines += [f"Also accepted as: {', '.join(f'`{a}`' for a in spec.aliases)}.", ""]
        lines += _rows_markdown(describe(spec.options))
        for key, cls in nested_tables(spec.options).items():
            lines += [f"`[adapter.{key}]` table:", ""]
            lines += _rows_markdown(describe(cls))
    return "\n".join(lines).rstrip("\n") + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def _rows_markdown(rows: list) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for row in rows:
        default = row.default.replace("|", "\\|")  # GFM tables split on | even in code
        cells = (f"`{row.key}`", _md(row.type), f"`{default}`", _md(row.help))
        out.append("| " + " | ".join(cells) + " |")
    return [*out, ""]


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
