"""A rich progress bar that satisfies `seqlm.progress.Progress`."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """Draws to stderr; extra fields given to `update` show after the bar.

    Only on a terminal (or with SEQLM_PROGRESS=1): in a log or a pipe, finished bars
    would be printed line by line, and a failure's one-line message would come after
    them instead of being all that stderr holds.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None
        self._draw = self._console.is_terminal or os.environ.get("SEQLM_PROGRESS") == "1"

    def start(self, description: str, total: float | None = None) -> None:
        self.finish()
        if not self._draw:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self._console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, info="")

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def update(self, **fields: object) -> None:
        if self._progress is not None:
            info = "  ".join(f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task, info=info)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
