"""`seqlm attention span`, `seqlm attention heads` and `seqlm probe`: thin over
`seqlm.analysis.span_run`, `.heads` and `.probes`; `span` and `heads` join the
`attention` group of `seqlm.cli.attention`.

The analysis modules are imported inside the commands: they import torch, which
`seqlm --help` and every other command should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from seqlm.cli.attention import attention_app
from seqlm.cli.progress_bar import RichProgress
from seqlm.cli.trust_gate import CheckOption, interpretation_caution
from seqlm.errors import ConfigError
from seqlm.outputs import claim_output

if TYPE_CHECKING:
    from seqlm.analysis.heads import HeadAnalysis
    from seqlm.analysis.probes import ProbeResult

RunArgument = Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")]
CorpusOption = Annotated[
    Path, typer.Option("--corpus", "-C", help="The corpus folder the run was trained on.")
]
SplitOption = Annotated[
    str, typer.Option("--split", help="Split to analyse (train, tuning, held_out, or all).")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Folder for tables and figures.")
]
WeightsOption = Annotated[
    str, typer.Option("--weights", help="auto (best if kept, else latest), latest or best.")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for sampling and bootstrap.")]


def _parse_ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{name} is empty")
    return values


def _out_folder(out: Path | None, run: Path, name: str) -> Path:
    folder = out if out is not None else run / "analysis" / name
    return claim_output(folder, f"seqlm attention {name}")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def span_command(
    run: RunArgument,
    corpus: CorpusOption,
    windows: Annotated[
        str, typer.Option("--windows", "-w", help="Window sizes w, e.g. 1,2,4,8,16,32.")
    ] = "1,2,4,8,16,32,64",
    modes: Annotated[str, typer.Option("--modes", help="span, truncation or both.")] = (
        "span,truncation"
    ),
    split: SplitOption = "held_out",
    by: Annotated[
        str, typer.Option("--by", help="Index column for per-group results (e.g. group).")
    ] = "group",
    max_sequences: Annotated[
        int | None, typer.Option("--max-sequences", help="At most this many per group.")
    ] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples.")] = 1000,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Perplexity gain counted as no loss.")
    ] = 0.01,
    seed: SeedOption = 0,
    out: OutOption = None,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of the PNG figures.")] = 300,
    check: CheckOption = True,
) -> None:
    """Loss vs window w (span masks and truncation), effective context length per group."""
    from seqlm.analysis.run_inputs import resolve_device
    from seqlm.analysis.span import TRUNCATION, SpanSweepConfig
    from seqlm.analysis.span_run import SpanRunSettings, span_experiment

    config = SpanSweepConfig(
        windows=_parse_ints(windows, "--windows"),
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        bootstrap=bootstrap,
        seed=seed,
        threshold=threshold,
    )
    settings = SpanRunSettings(
        sweep=config,
        split=split,
        by=by,
        max_sequences=max_sequences,
        weights=weights,
        device=resolve_device(device),
        dpi=dpi,
    )
    console = Console()
    gate = _gate(run, console, check=check, device=settings.device, weights=weights)
    progress = RichProgress()
    try:
        result = span_experiment(run, corpus, settings, out=out, gate=gate, progress=progress)
    finally:
        progress.finish()
    console.print(_window_table(result.sweep, split))
    if TRUNCATION in config.modes:
        console.print(_effective_context_table(result.sweep, by))
        console.print(result.sweep.definition())
    console.print(f"written: {result.table_file}, {result.summary_file}")
    for figure in result.figures:
        console.print(f"figure: {figure}")


def _gate(run: Path, console: Console, *, check: bool, device: str, weights: str) -> Any:
    """The trust gate as a library analysis calls it: on the opened corpus, after loading."""
    return lambda corpus: interpretation_caution(
        run, corpus, console, check=check, device=device, weights=weights
    )


def _window_table(sweep: Any, split: str) -> Table:  # noqa: ANN401 (SpanSweep)
    """Loss and perplexity gain per window over all groups, in the header's mode order."""
    from seqlm.analysis.span import ALL_GROUPS, SPAN, TRUNCATION

    modes = sweep.config.modes
    overall = sweep.table.filter(pl.col("group") == ALL_GROUPS)
    full = float(overall["full_loss"][0])
    title = (
        f"Loss by window ({split}: {int(overall['tokens'][0]):,} tokens, "
        f"{int(overall['sequences'][0]):,} sequences; full context {full:.4f})"
    )
    columns = ["w"]
    if SPAN in modes:
        columns += ["span loss", "span ppl gain"]
    if TRUNCATION in modes:
        columns += ["trunc loss", "trunc ppl gain", "gain p5", "gain p95"]
    table = _table(title, *columns)
    for w in sorted(set(sweep.config.windows)):
        cells = [str(w)]
        for mode in (SPAN, TRUNCATION):  # the header's order, whatever --modes says
            if mode not in modes:
                continue
            at = (pl.col("mode") == mode) & (pl.col("window") == w)
            row = overall.filter(at).row(0, named=True)
            cells += [f"{row['loss']:.4f}", f"{row['perplexity_gain']:+.2%}"]
            if mode == TRUNCATION:
                cells += [f"{row['gain_low']:+.2%}", f"{row['gain_high']:+.2%}"]
        table.add_row(*cells)
    return table


def _effective_context_table(sweep: Any, by: str) -> Table:  # noqa: ANN401 (SpanSweep)
    from seqlm.analysis.span import TRUNCATION

    table = _table(f"Effective context length by {by}", by, "tokens", "full loss", "w")
    truncations = sweep.table.filter(pl.col("mode") == TRUNCATION)
    for (group,), part in truncations.group_by("group", maintain_order=True):
        effective = sweep.effective.get(str(group))
        shown = str(effective) if effective is not None else f"> {max(sweep.config.windows)}"
        table.add_row(
            str(group), f"{int(part['tokens'][0]):,}", f"{part['full_loss'][0]:.4f}", shown
        )
    return table


def heads_command(
    run: RunArgument,
    corpus: CorpusOption,
    split: SplitOption = "held_out",
    max_sequences: Annotated[
        int | None, typer.Option("--max-sequences", help="At most this many sequences.")
    ] = None,
    ablation: Annotated[
        bool, typer.Option("--ablation/--no-ablation", help="Also remove heads one by one.")
    ] = True,
    prune_points: Annotated[
        int | None, typer.Option("--prune-points", help="Points on the prune curve.")
    ] = None,
    seed: SeedOption = 0,
    out: OutOption = None,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    check: CheckOption = True,
) -> None:
    """Head importance (gate gradients), single-head ablation, prune-by-importance curve."""
    from seqlm.analysis.heads import HeadAnalysisConfig, analyse_heads, plot_heads
    from seqlm.analysis.run_inputs import (
        corpus_sequences,
        load_model_and_corpus,
        resolve_device,
        select_index,
    )

    config = HeadAnalysisConfig(ablation=ablation, prune_points=prune_points)
    model, loaded = load_model_and_corpus(run, corpus, weights, resolve_device(device))
    console = Console()
    caution = interpretation_caution(
        run, loaded, console, check=check, device=resolve_device(device), weights=weights
    )
    rows = select_index(loaded.index, split, per_group=max_sequences, seed=seed)
    progress = RichProgress()
    try:
        sequences = corpus_sequences(loaded, rows)
        conditioning = loaded.vocabulary.condition_ids
        analysis = analyse_heads(model, sequences, config, progress, conditioning)
    finally:
        progress.finish()
    folder = _out_folder(out, run, "heads")
    table = analysis.table()
    table.write_csv(folder / "heads.csv")
    analysis.prune_curve.write_csv(folder / "prune_curve.csv")
    figure = plot_heads(analysis, folder / "heads.png", caution=caution)

    _print_heads(console, analysis, table, split, ablation)
    console.print(f"written: {folder / 'heads.csv'}, {folder / 'prune_curve.csv'}")
    console.print(f"figure: {figure}")


def _print_heads(
    console: Console, analysis: HeadAnalysis, table: pl.DataFrame, split: str, ablation: bool
) -> None:
    """The heads and prune-curve tables, and how many [COND] targets were left out."""
    columns = ["layer", "head", "importance", "raw", "rank"]
    columns += ["loss if removed", "change"] if ablation else []
    shown = _table(
        f"Heads ({split}: {analysis.tokens:,} tokens; intact loss {analysis.base_loss:.4f})",
        *columns,
    )
    for row in table.iter_rows(named=True):
        cells = [
            str(row["layer"]),
            str(row["head"]),
            f"{row['importance']:.3f}",
            f"{row['importance_raw']:.4g}",
            str(row["importance_rank"]),
        ]
        if ablation:
            cells += [f"{row['ablation_loss']:.4f}", f"{row['loss_change']:+.4f}"]
        shown.add_row(*cells)
    console.print(shown)
    curve = _table("Pruning, least important first", "heads removed", "share", "loss", "change")
    for row in analysis.prune_curve.iter_rows(named=True):
        curve.add_row(
            str(row["heads_pruned"]),
            f"{row['fraction_pruned']:.0%}",
            f"{row['loss']:.4f}",
            f"{row['loss_change']:+.4f}",
        )
    console.print(curve)
    if analysis.context_only:
        console.print(
            f"{analysis.context_only:,} conditioning targets ([COND]) read as context only, "
            "not counted in any loss"
        )


def probe_command(
    run: RunArgument,
    corpus: CorpusOption,
    label: Annotated[
        str,
        typer.Option("--label", "-l", help="Index column (group, condition, ...) or token_kind."),
    ],
    split: SplitOption = "held_out",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Probe about this many tokens (whole sequences).")
    ] = 20000,
    folds: Annotated[int, typer.Option("--folds", help="Folds, grouped by entity.")] = 5,
    seed: SeedOption = 0,
    out: OutOption = None,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    check: CheckOption = True,
) -> None:
    """Linear probes per layer for a label: grouped folds, control task, selectivity."""
    from seqlm.analysis.probes import (
        ProbeConfig,
        layer_states,
        plot_probes,
        run_probes,
        special_ids,
        token_labels,
    )
    from seqlm.analysis.run_inputs import (
        corpus_sequences,
        load_model_and_corpus,
        resolve_device,
        select_index,
    )

    config = ProbeConfig(folds=folds, seed=seed)
    model, loaded = load_model_and_corpus(run, corpus, weights, resolve_device(device))
    console = Console()
    caution = interpretation_caution(
        run, loaded, console, check=check, device=resolve_device(device), weights=weights
    )
    rows = select_index(loaded.index, split, max_tokens=max_tokens, seed=seed)
    tokens = loaded.vocabulary.tokens
    progress = RichProgress()
    try:
        states = layer_states(
            model,
            corpus_sequences(loaded, rows),
            skip_ids=special_ids(tokens),
            context_only_ids=loaded.vocabulary.condition_ids,
            progress=progress,
        )
        labels = token_labels(states, rows, label, tokens)
        entities = np.asarray(rows["entity"].to_list(), dtype=object)[states.sequence]
        result = run_probes(states, labels, entities, label=label, config=config, progress=progress)
    finally:
        progress.finish()
    folder = _out_folder(out, run, f"probe_{label}")
    result.table.write_csv(folder / "probe.csv")
    figure = plot_probes(result, folder / "probe.png", caution=caution)

    _print_probes(console, result, label, split)
    console.print(f"written: {folder / 'probe.csv'}")
    console.print(f"figure: {figure}")


def _print_probes(console: Console, result: ProbeResult, label: str, split: str) -> None:
    """The per-layer probe table, and how many [COND] positions were not probed."""
    shown = _table(
        f"Probes for {label!r} ({split}: {result.tokens:,} tokens, {result.entities:,} "
        f"entities, {result.folds} grouped folds; classes {', '.join(result.classes[:8])}"
        f"{' ...' if len(result.classes) > 8 else ''})",
        "layer",
        "accuracy",
        "control",
        "selectivity",
        "majority",
    )
    for row in result.table.iter_rows(named=True):
        shown.add_row(
            "emb" if row["layer"] == 0 else str(row["layer"]),
            f"{row['accuracy']:.3f} ± {row['accuracy_sd']:.3f}",
            f"{row['control_accuracy']:.3f} ± {row['control_sd']:.3f}",
            f"{row['selectivity']:+.3f}",
            f"{row['majority']:.3f}",
        )
    console.print(shown)
    if result.context_only:
        console.print(
            f"{result.context_only:,} conditioning positions ([COND]) excluded: "
            "context only, never probed"
        )


def register(app: typer.Typer) -> None:
    attention_app.command("span")(span_command)
    attention_app.command("heads")(heads_command)
    app.command("probe")(probe_command)
