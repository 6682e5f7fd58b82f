"""`seqlm task RUN --corpus CORPUS --labels LABELS --out OUT`: thin over `seqlm.tasks`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from seqlm.errors import ConfigError


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def task_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus the run was trained on.")],
    labels: Annotated[
        Path,
        typer.Option("--labels", help="MEDS label file, or a folder of label shards (*.parquet)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write results into.")],
    method: Annotated[
        str, typer.Option(help="Methods, comma-separated: zero-shot, probe, finetune, baseline.")
    ] = "zero-shot,probe,finetune,baseline",
    outcome_codes: Annotated[
        list[str] | None,
        typer.Option(
            "--outcome-codes",
            help="Zero-shot: a code pattern of the outcome (shell-style, e.g. MEDS_DEATH); "
            "repeat for several.",
        ),
    ] = None,
    horizon: Annotated[
        str | None,
        typer.Option(help="Zero-shot: how far past the prediction time to look (24h, 30d)."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Zero-shot: trajectories per label.")] = 20,
    max_tokens: Annotated[
        int, typer.Option(help="Zero-shot: token budget of each trajectory.")
    ] = 256,
    epochs: Annotated[int, typer.Option(help="Fine-tune: passes over the train labels.")] = 10,
    finetune_minutes: Annotated[
        float, typer.Option(help="Fine-tune: wall-time budget in minutes.")
    ] = 5.0,
    checkpoint: Annotated[str, typer.Option(help="Which weights: best or latest.")] = "best",
    resamples: Annotated[
        int, typer.Option(help="Bootstrap resamples (by subject) for the 95% intervals.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of sampling, fine-tuning and bootstrap.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT when it holds an earlier task run.")
    ] = False,
) -> None:
    """Predict a clinical task (MEDS labels) four ways: zero-shot from sampled futures,
    a probe on the model's state, a fine-tuned head, and a bag-of-codes baseline; AUROC,
    AUPRC and Brier with 95% subject-bootstrap intervals on held-out subjects."""
    from seqlm.cli.progress_bar import RichProgress
    from seqlm.outputs import claim_output
    from seqlm.tasks.options import TaskOptions
    from seqlm.tasks.run import run_task
    from seqlm.vocabularies.time_gaps import parse_duration

    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"--checkpoint must be best or latest, got {checkpoint!r}")
    options = TaskOptions(
        methods=_methods(method),
        outcome_codes=tuple(outcome_codes or ()),
        horizon_s=parse_duration(horizon) if horizon else None,
        samples=samples,
        max_new_tokens=max_tokens,
        finetune_epochs=epochs,
        finetune_minutes=finetune_minutes,
        checkpoint=checkpoint,
        resamples=resamples,
        seed=seed,
    )
    folder = claim_output(out, "seqlm task")
    progress = RichProgress()
    try:
        result = run_task(
            run, corpus, labels, folder, options, overwrite=overwrite, progress=progress
        )
    finally:
        progress.finish()
    _print_result(result, folder)


def _print_result(result, folder: Path) -> None:  # noqa: ANN001
    console = Console(width=max(Console().width, 120))  # the intervals need the room
    record = result.record
    console.print(Text(f"labels used {record['labels_used']} of {record['rows_read']}"))
    for reason, count in record["rejects"].items():
        console.print(Text(f"  rejected {count}: {reason}"))
    console.print(_table(result))
    warnings = {m.warning for m in result.metrics.values() if m.warning}
    for warning in sorted(warnings):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    console.print(Text(f"written to {folder}"))


def _table(result) -> Table:  # noqa: ANN001
    table = Table(title=f"{result.record['report_split']} labels (95% CI, subject bootstrap)")
    for name in ("method", "AUROC", "AUPRC", "Brier", "labels", "subjects", "positive rate"):
        table.add_column(name)
    for method, m in result.metrics.items():
        table.add_row(
            method,
            m.auroc.text(),
            m.auprc.text(),
            m.brier.text(),
            str(m.n_labels),
            str(m.n_subjects),
            f"{m.positive_rate:.3f}",
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("task")(task_command)
