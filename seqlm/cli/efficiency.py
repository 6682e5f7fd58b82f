"""`seqlm efficiency CORPUS` (efficient-training methods against a fully decayed
baseline under one budget) and `seqlm calibrate CORPUS` (the reference-time table).

`seqlm.studies.efficiency_run` is imported inside the commands: it imports torch, which
`seqlm --help` and every other command should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from seqlm.cli.progress_bar import RichProgress


def efficiency_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (from `seqlm ingest`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for runs, table, plot.")],
    budget: Annotated[
        str,
        typer.Option(help="Per run: a number in --unit, or '<N>steps' (N full-depth steps)."),
    ] = "100steps",
    unit: Annotated[str, typer.Option(help="Budget unit: flops or reference_s.")] = "flops",
    methods: Annotated[
        str,
        typer.Option(help="Comma-separated: baseline,pld,stacking,selective_backprop,layerdrop"),
    ] = "baseline,pld,stacking,selective_backprop",
    seeds: Annotated[int, typer.Option(help="Seeds per method.")] = 3,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Calibration table (from `seqlm calibrate`) for --unit reference_s."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="key=value, e.g. model.n_layer=8 lr=1e-3 evaluations=10 pld.theta_bar=0.5 "
            "stacking.start_depth=2 selective_backprop.beta=2",
        ),
    ] = None,
) -> None:
    """Train each method for several seeds under the same budget and compare them with a
    baseline whose learning rate decays fully within that budget."""
    from seqlm.studies.efficiency import comparison_rows
    from seqlm.studies.efficiency_run import efficiency_options, efficiency_study

    options = efficiency_options(methods, seeds, budget, unit, set_ or [])
    progress = RichProgress()
    try:
        study = efficiency_study(corpus, out, options, calibration=calibration, progress=progress)
    finally:
        progress.finish()
    rows = comparison_rows(study.comparison)
    console = Console()
    view = Table(title=f"{corpus.name}: {len(options.methods)} methods x {options.seeds} seeds")
    for header in rows[0]:
        view.add_column(header)
    for row in rows:
        view.add_row(*row.values())
    console.print(view)
    console.print(
        f"table: {study.table_file}   plot: {study.plot_file}   runs: {out}/<method>/seed_<k>"
    )


def calibrate_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder: fixes the vocabulary size.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Calibration JSON to write.")],
    repeats: Annotated[int, typer.Option(help="Timed repeats per depth (median).")] = 5,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="As for `seqlm efficiency`, e.g. model.n_layer=8."),
    ] = None,
) -> None:
    """Measure step and forward times per active depth on this machine (reference time)."""
    from seqlm.studies.efficiency_run import calibrate_for_study, efficiency_options

    options = efficiency_options("baseline", 1, "1", "flops", set_ or [])
    progress = RichProgress()
    try:
        table = calibrate_for_study(corpus, out, options, repeats=repeats, progress=progress)
    finally:
        progress.finish()
    console = Console()
    view = Table(title=f"reference time per token, batch {table.batch_size} x {table.context}")
    for header in ("active depth", "train step (us/token)", "forward (us/token)"):
        view.add_column(header, justify="right")
    for depth, (t, f) in enumerate(
        zip(table.train_s_per_token, table.forward_s_per_token, strict=True)
    ):
        view.add_row(str(depth), f"{1e6 * t:.2f}", f"{1e6 * f:.2f}")
    console.print(view)
    console.print(f"written: {out}")


def register(app: typer.Typer) -> None:
    app.command("efficiency")(efficiency_command)
    app.command("calibrate")(calibrate_command)
