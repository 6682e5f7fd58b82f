"""Progress reporting without printing from library code.

Long library functions take an optional `progress` argument; the CLI passes one that
draws a progress bar, tests and scripts pass nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: float | None = None) -> None: ...

    def advance(self, amount: float = 1) -> None: ...

    def update(self, **fields: object) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """The default: report nothing."""

    def start(self, description: str, total: float | None = None) -> None:
        pass

    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, **fields: object) -> None:
        pass

    def finish(self) -> None:
        pass


def ensure_progress(progress: Progress | None) -> Progress:
    return progress if progress is not None else NoProgress()
