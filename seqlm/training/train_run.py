"""`seqlm train` as one call: settings from a preset, a TOML file, `--set` strings and a
budget (through the training recipe), then training or resuming the run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqlm.progress import Progress
from seqlm.training.config import resolve_settings
from seqlm.training.session import train_on_corpus
from seqlm.training.trainer import TrainResult


@dataclass(frozen=True)
class TrainRequest:
    """Where a run's settings come from and how it starts."""

    preset: str | None = field(default=None, metadata={"help": "Model size: micro, small or base."})
    config: Path | None = field(
        default=None, metadata={"help": "TOML file with [model] and [train] tables."}
    )
    sets: tuple[str, ...] = field(
        default=(), metadata={"help": "table.key=value overrides (TOML literals)."}
    )
    budget: str | None = field(
        default=None, metadata={"help": "Budget the recipe plans for: 10m, 2Mtok, 1e15flops."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue the run from its last checkpoint."}
    )
    init: Path | None = field(
        default=None, metadata={"help": "Start from this run's weights (fine-tune)."}
    )

    @property
    def gives_settings(self) -> bool:
        """Whether any setting was given (a resumed run otherwise keeps its own)."""
        given = self.preset is not None or self.config is not None
        return given or bool(self.sets) or self.budget is not None


def train_run(
    corpus: str | Path,
    out: str | Path,
    request: TrainRequest,
    progress: Progress | None = None,
) -> TrainResult:
    """Train (or, with `resume`, continue) the run folder `out` on `corpus`; settings are
    resolved through the recipe unless a resumed run is given none."""
    settings = (
        resolve_settings(
            request.config, request.sets, request.preset, budget=request.budget, recipe=True
        )
        if request.gives_settings or not request.resume
        else None
    )
    return train_on_corpus(
        corpus, out, settings, resume=request.resume, progress=progress, init=request.init
    )
