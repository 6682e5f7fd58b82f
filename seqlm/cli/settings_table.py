"""Print settings rows (key, type, default, meaning) readably at any terminal width."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from seqlm.settings_help import SettingRow


def print_settings(console: Console, rows: Sequence[SettingRow], indent: str = "  ") -> None:
    """`key  type = default` on one line, the meaning indented below it.

    Plain `Text`, never markup: defaults such as ["i"] or meanings naming [UNK] show as
    written.
    """
    for row in rows:
        line = Text(indent)
        line.append(row.key, style="bold")
        line.append(f"  {row.type} = {row.default}")
        console.print(line)
        console.print(Padding(Text(row.help), (0, 0, 0, len(indent) + 4), expand=False))
