"""A run's evaluation as one call: open the corpus, score the model and its baselines,
write eval.json and the plots (`seqlm eval`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqlm.corpus import load_corpus
from seqlm.evaluation.report import (
    EvalOptions,
    ModelEvaluation,
    default_output_folder,
    evaluate_run,
    write_report,
)
from seqlm.outputs import output_folder, output_lock
from seqlm.progress import Progress


@dataclass
class EvaluatedRun:
    """The evaluation, the corpus folder's name, and the files written ({what: path})."""

    evaluation: ModelEvaluation
    corpus_name: str
    written: dict[str, Path]


def evaluate_run_into_folder(
    run: Path,
    corpus: Path,
    options: EvalOptions,
    *,
    out: Path | None = None,
    progress: Progress | None = None,
) -> EvaluatedRun:
    """Evaluate `run` on `corpus` and write the report into `out` (default
    RUN/eval/CORPUS-SPLIT), a folder locked against other seqlm writers from before any
    scoring until the report is written."""
    opened = load_corpus(corpus)
    folder = output_folder(out or default_output_folder(run, opened, options.split))
    with output_lock(folder, "seqlm eval"):
        evaluation = evaluate_run(run, opened, options, progress)
        return EvaluatedRun(evaluation, opened.path.name, write_report(evaluation, folder))
