"""`seqlm lesion` as one call: compare runs trained elsewhere, or train them first (one
for all groups, or one per group) on the pre-lesion sequences, then compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqlm.corpus import load_corpus
from seqlm.outputs import output_file, output_folder, output_lock
from seqlm.progress import Progress
from seqlm.studies.lesion import (
    ALL_GROUPS,
    LesionOptions,
    LesionResult,
    lesion_comparison,
    run_lesion_experiment,
    write_lesion_report,
)
from seqlm.training.config import resolve_settings


@dataclass(frozen=True)
class LesionRequest:
    """Runs to compare, or how to train them."""

    runs: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Trained runs: RUN for all groups, or GROUP=RUN per group."},
    )
    per_group: bool = field(
        default=False, metadata={"help": "Train one model per group (FinchGPT's setting)."}
    )
    preset: str | None = field(default=None, metadata={"help": "Model size for training."})
    config: Path | None = field(
        default=None, metadata={"help": "TOML with [model] and [train] for training."}
    )
    sets: tuple[str, ...] = field(
        default=(), metadata={"help": "table.key=value overrides for training."}
    )
    budget: str | None = field(
        default=None, metadata={"help": "Training budget per model: 10m, 2Mtok or 1e15flops."}
    )
    init: Path | None = field(
        default=None, metadata={"help": "With per_group: fine-tune each group from this run."}
    )
    select_on_tuning: bool = field(
        default=True,
        metadata={
            "help": "With init: score a group with the pool unless its fine-tuned run is "
            "better on the group's tuning split (paired bootstrap)."
        },
    )

    def given_runs(self) -> dict[str, str]:
        """{group: run}; a run given without `GROUP=` serves all groups."""
        return dict(r.split("=", 1) if "=" in r else (ALL_GROUPS, r) for r in self.runs)


def lesion_study(
    corpus: Path,
    out: Path,
    request: LesionRequest,
    options: LesionOptions,
    progress: Progress | None = None,
) -> tuple[LesionResult, dict[str, Path]]:
    """Compare the given runs, or train and compare (see `run_lesion_experiment`), writing
    lesion.json and lesion.png into `out` (locked against other seqlm writers meanwhile);
    returns the result and {what: path}."""
    with output_lock(output_folder(out), "seqlm lesion"):
        for name in ("lesion.json", "lesion.png"):  # never over a file seqlm did not write
            output_file(Path(out) / name)
        if request.runs:
            result = lesion_comparison(load_corpus(corpus), request.given_runs(), options, progress)
            return result, write_lesion_report(result, out)
        settings = resolve_settings(
            request.config, request.sets, request.preset, budget=request.budget, recipe=True
        )
        result = run_lesion_experiment(
            corpus,
            out,
            settings=settings,
            per_group=request.per_group,
            options=options,
            progress=progress,
            init=request.init,
            select_on_tuning=request.select_on_tuning,
        )
        return result, {"json": out / "lesion.json", "plot": out / "lesion.png"}
