"""The efficiency study as calls the CLI makes (`seqlm efficiency`, `seqlm calibrate`):
options from the command line's strings, the reference-time table when the budget is in
reference seconds, the comparison, and its table and plot."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlm.config import options_from_mapping, parse_option_strings
from seqlm.corpus import load_corpus
from seqlm.errors import ConfigError
from seqlm.model import GPTConfig
from seqlm.outputs import output_file, output_folder, output_lock
from seqlm.progress import Progress
from seqlm.studies.efficiency import (
    Comparison,
    EfficiencyOptions,
    compare_methods,
    comparison_markdown,
    plot_comparison,
    run_settings,
)
from seqlm.training.efficient.reference_time import CalibrationTable, calibrate
from seqlm.training.session import build_gpt_config

# The calibration table `seqlm efficiency --unit reference_s` measures and keeps in OUT
# when none is given.
CALIBRATION_FILE = "calibration.json"


def efficiency_options(
    methods: str, seeds: int, budget: str, unit: str, sets: list[str]
) -> EfficiencyOptions:
    """EfficiencyOptions from the command line; `--set` keys are the options' fields,
    `model.<GPTConfig field>`, `pld.<field>`, `stacking.<field>`, `selective_backprop.<field>`."""
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


def study_model_config(corpus: Path, options: EfficiencyOptions) -> GPTConfig:
    """The model every method trains: `options.model` on the corpus's vocabulary."""
    loaded = load_corpus(corpus)
    return build_gpt_config(run_settings(options, 0, 1), loaded.vocab_size)


@dataclass
class EfficiencyStudy:
    """The comparison and the files written beside the runs."""

    comparison: Comparison
    table_file: Path
    plot_file: Path


def efficiency_study(
    corpus: Path,
    out: Path,
    options: EfficiencyOptions,
    *,
    calibration: Path | None = None,
    progress: Progress | None = None,
) -> EfficiencyStudy:
    """Train and compare every method x seed into `out` (locked against other seqlm
    writers meanwhile), then write efficiency.md and efficiency.png. A reference-time
    budget reads the calibration table at `calibration` (default OUT/calibration.json),
    measuring and saving it there first when it does not exist."""
    with output_lock(output_folder(out), "seqlm efficiency"):
        table = None
        if options.unit == "reference_s":
            path = calibration or out / CALIBRATION_FILE
            if path.exists():
                table = CalibrationTable.load(path)
            else:
                config = study_model_config(corpus, options)
                table = calibrate(config, options.batch_size, progress=progress)
                table.save(path)
        result = compare_methods(corpus, out, options, calibration=table, progress=progress)
        markdown = out / "efficiency.md"
        markdown.write_text(comparison_markdown(result), encoding="utf-8")
        return EfficiencyStudy(result, markdown, plot_comparison(result, out / "efficiency.png"))


def calibrate_for_study(
    corpus: Path,
    out: Path,
    options: EfficiencyOptions,
    *,
    repeats: int = 5,
    progress: Progress | None = None,
) -> CalibrationTable:
    """Measure step and forward times per active depth of the study's model on this
    machine and save them as the JSON file `out` (locked meanwhile)."""
    with output_lock(output_file(out), "seqlm calibrate"):
        config = study_model_config(corpus, options)
        table = calibrate(config, options.batch_size, repeats=repeats, progress=progress)
        table.save(out)
    return table
