"""The span experiment on a trained run as one call (`seqlm attention span`): load the run
and its corpus, choose the sequences, sweep span masks and truncations, and write
span_table.csv, span.json and the figures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from seqlm.analysis.run_inputs import (
    CautionGate,
    corpus_sequences,
    load_model_and_corpus,
    no_caution,
    select_index,
)
from seqlm.analysis.span import (
    TRUNCATION,
    SpanSweep,
    SpanSweepConfig,
    plot_effective_context,
    plot_loss_vs_window,
    span_sweep,
)
from seqlm.errors import ConfigError
from seqlm.outputs import output_folder, output_lock
from seqlm.progress import Progress


@dataclass(frozen=True)
class SpanRunSettings:
    """Which sequences the sweep reads, how they are grouped, and the figures' resolution."""

    sweep: SpanSweepConfig = field(
        default_factory=SpanSweepConfig,
        metadata={"help": "Windows, modes and bootstrap of the sweep."},
    )
    split: str = field(
        default="held_out", metadata={"help": "Split to analyse (train, tuning, held_out, all)."}
    )
    by: str = field(default="group", metadata={"help": "Index column for per-group results."})
    max_sequences: int | None = field(
        default=None, metadata={"help": "At most this many sequences per group (None: all)."}
    )
    weights: str = field(
        default="auto", metadata={"help": "auto (best if kept, else latest), latest or best."}
    )
    device: str = field(default="cpu", metadata={"help": "Device to run the model on."})
    dpi: int = field(default=300, metadata={"help": "Resolution of the PNG figures."})


@dataclass
class SpanRun:
    """The sweep and what was written: the folder, its figures, the caption they carry."""

    sweep: SpanSweep
    folder: Path
    figures: list[Path]
    caution: str

    @property
    def table_file(self) -> Path:
        return self.folder / "span_table.csv"

    @property
    def summary_file(self) -> Path:
        return self.folder / "span.json"


def span_experiment(
    run: Path,
    corpus: Path,
    settings: SpanRunSettings,
    *,
    out: Path | None = None,
    gate: CautionGate = no_caution,
    progress: Progress | None = None,
) -> SpanRun:
    """Sweep `run` on `corpus` and write the results into `out` (default
    RUN/analysis/span, locked against other seqlm writers while the results are written). `gate` runs right after loading,
    before any analysis; its caption goes on every figure and into span.json."""
    model, loaded = load_model_and_corpus(run, corpus, settings.weights, settings.device)
    caution = gate(loaded)
    by = settings.by
    if by not in loaded.index.columns:
        raise ConfigError(f"--by {by!r}: no such index column; columns: {loaded.index.columns}")
    seed = settings.sweep.seed
    rows = select_index(
        loaded.index, settings.split, per_group=settings.max_sequences, group_column=by, seed=seed
    )
    groups = rows[by].cast(pl.String).fill_null("(none)").to_list()
    sequences = corpus_sequences(loaded, rows)
    conditioning = loaded.vocabulary.condition_ids
    sweep = span_sweep(model, sequences, groups, settings.sweep, progress, conditioning)
    folder = output_folder(out if out is not None else run / "analysis" / "span")
    result = SpanRun(sweep, folder, [], caution)
    with output_lock(folder, "seqlm attention span"):
        _write_span_files(result, settings, run, corpus)
    return result


def _write_span_files(result: SpanRun, settings: SpanRunSettings, run: Path, corpus: Path) -> None:
    sweep, folder, caution, dpi = result.sweep, result.folder, result.caution, settings.dpi
    config = settings.sweep
    sweep.table.write_csv(result.table_file)
    result.figures.append(
        plot_loss_vs_window(sweep, folder / "loss_vs_window.png", dpi=dpi, caution=caution)
    )
    if TRUNCATION in config.modes:
        result.figures.append(
            plot_effective_context(
                sweep, folder / "effective_context.png", dpi=dpi, caution=caution
            )
        )
    summary = {
        "run": str(run),
        "corpus": str(corpus),
        "split": settings.split,
        "by": settings.by,
        "windows": sorted(set(config.windows)),
        "modes": list(config.modes),
        "definition": sweep.definition(),
        "effective_context_length": sweep.effective,
        "n_layer": sweep.n_layer,
        "block_size": sweep.block_size,
        "interpretation_warning": caution or None,
    }
    result.summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
