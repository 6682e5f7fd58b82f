"""The project's error types.

Library code never prints or exits; it raises one of these. Each names the place at
fault (file, row, column) so the CLI can turn it into a one-line message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path


class Notice(UserWarning):
    """Something the user should hear about that is not a problem (the CLI prints "note:")."""


class SeqlmError(Exception):
    """Base class for every error seqlm raises on purpose."""


class InputError(SeqlmError):
    """A user's input file cannot be read as the format it claims to be.

    `row` is 1-based as a person counts lines or rows in the file; `column` is the
    column name (tabular formats) or a field name (structured formats).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ConfigError(SeqlmError):
    """A configuration (TOML file, --option, --set) is invalid."""


class CorpusError(SeqlmError):
    """A corpus or run folder is missing, incomplete or inconsistent."""


def did_you_mean(unknown: Sequence[str], known: Iterable[str], prefix: str = "") -> str:
    """` (did you mean train.max_steps?)` for the closest known names, or ``."""
    known = list(known)
    close = [
        prefix + match
        for name in unknown
        for match in difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    ]
    return f" (did you mean {', '.join(close)}?)" if close else ""
