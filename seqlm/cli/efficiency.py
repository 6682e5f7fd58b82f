"""`seqlm efficiency CORPUS` (efficient-training methods against a fully decayed
baseline under one budget) and `seqlm calibrate CORPUS` (the reference-time table).

`seqlm.studies.efficiency` and `seqlm.training` are imported inside the functions: they
import torch, which `seqlm --help` and every other command should not wait for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from seqlm.cli.progress_bar import RichProgress
from seqlm.corpora_adapters.base import options_from_mapping, parse_option_strings
from seqlm.errors import ConfigError
from seqlm.outputs import claim_output

CALIBRATION_FILE = "calibration.json"


def efficiency_options(methods: str, seeds: int, budget: str, unit: str, sets: list[str]) -> Any:
    """EfficiencyOptions from the command line; `--set` keys are the options' fields,
    `model.<GPTConfig field>`, `pld.<field>`, `stacking.<field>`, `selective_backprop.<field>`."""
    from seqlm.studies.efficiency import EfficiencyOptions

    raw = parse_option_strings(sets)
    values: dict[str, Any] = {
        "methods": tuple(m.strip() for m in methods.split(",") if m.strip()),
        "seeds": seeds,
        "budget": budget,
        "unit": unit,
    }
    defaults = EfficiencyOptions()
    nested = {
        "pld": type(defaults.pld),
        "stacking": type(defaults.stacking),
        "selective_backprop": type(defaults.selective_backprop),
    }
    model = dict(defaults.model)
    for key, value in raw.items():
        if key == "model":
            if not isinstance(value, dict):
                raise ConfigError("--set model needs model.<field>=value")
            model.update(value)
        elif key in nested:
            if not isinstance(value, dict):
                raise ConfigError(f"--set {key} needs {key}.<field>=value")
            if key == "stacking" and "grow_at" in value:
                value = {**value, "grow_at": tuple(value["grow_at"])}
            values[key] = options_from_mapping(nested[key], value, prefix=f"{key}.")
        else:
            values[key] = value
    values["model"] = model
    known = {f.name for f in dataclasses.fields(EfficiencyOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown efficiency options {unknown}; known: {sorted(known)}")
    try:
        return EfficiencyOptions(**values)
    except TypeError as err:
        raise ConfigError(f"efficiency options: {err}") from None


def _model_config(corpus: Path, options: Any) -> Any:
    from seqlm.corpus import load_corpus
    from seqlm.studies.efficiency import run_settings
    from seqlm.training.session import build_gpt_config

    loaded = load_corpus(corpus)
    return build_gpt_config(run_settings(options, 0, 1), loaded.vocab_size)


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
    from seqlm.studies.efficiency import (
        compare_methods,
        comparison_markdown,
        comparison_rows,
        plot_comparison,
    )
    from seqlm.training.efficient.reference_time import CalibrationTable, calibrate

    options = efficiency_options(methods, seeds, budget, unit, set_ or [])
    claim_output(out, "seqlm efficiency")
    table = None
    if options.unit == "reference_s":
        path = calibration or out / CALIBRATION_FILE
        if path.exists():
            table = CalibrationTable.load(path)
        else:
            table = calibrate(
                _model_config(corpus, options), options.batch_size, progress=RichProgress()
            )
            table.save(path)
    progress = RichProgress()
    try:
        result = compare_methods(corpus, out, options, calibration=table, progress=progress)
    finally:
        progress.finish()
    rows = comparison_rows(result)
    console = Console()
    view = Table(title=f"{corpus.name}: {len(options.methods)} methods x {options.seeds} seeds")
    for header in rows[0]:
        view.add_column(header)
    for row in rows:
        view.add_row(*row.values())
    console.print(view)
    (out / "efficiency.md").write_text(comparison_markdown(result), encoding="utf-8")
    png = plot_comparison(result, out / "efficiency.png")
    console.print(f"table: {out / 'efficiency.md'}   plot: {png}   runs: {out}/<method>/seed_<k>")


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
    from seqlm.training.efficient.reference_time import calibrate

    options = efficiency_options("baseline", 1, "1", "flops", set_ or [])
    claim_output(out, "seqlm calibrate", is_file=True)
    config = _model_config(corpus, options)
    table = calibrate(config, options.batch_size, repeats=repeats, progress=RichProgress())
    table.save(out)
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
