"""`seqlm attention maps|stats`: attention figures for one sequence, statistics over a split.

The group is `attention_app`; other analyses add their commands to it with
`@attention_app.command("name")` in their own modules (imported by `register`, see
`EXTRA_COMMAND_MODULES`), so this file stays the one place the group is built.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from seqlm.cli.progress_bar import RichProgress
from seqlm.cli.trust_gate import CheckOption, interpretation_caution, with_caution
from seqlm.errors import ConfigError
from seqlm.outputs import claim_output

attention_app = typer.Typer(
    help="Attention analysis of a trained run: maps, corpus statistics.", no_args_is_help=True
)

# Modules that add commands to `attention_app` (span, heads, probe); imported by register.
EXTRA_COMMAND_MODULES: tuple[str, ...] = ()

RunArgument = Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")]
CorpusOption = Annotated[
    Path, typer.Option("--corpus", "-C", help="The corpus folder the run was trained on.")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder to write into.")]
WeightsOption = Annotated[
    str,
    typer.Option("--weights", help="auto (best if kept, else latest), latest or best."),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DpiOption = Annotated[int, typer.Option("--dpi", help="Resolution of the PNG figures.")]


def parse_indices(text: str | None, upper: int, name: str) -> list[int] | None:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; None or 'all' -> None. Each must be < upper."""
    if text is None or text.strip().lower() == "all":
        return None
    chosen: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                chosen.extend(range(low, high + 1))
            else:
                chosen.append(int(part))
        except ValueError:
            raise ConfigError(f"--{name}: {part!r} is not a number or a range like 2-5") from None
    bad = [i for i in chosen if not 0 <= i < upper]
    if bad or not chosen:
        raise ConfigError(f"--{name}: {bad or text!r} out of range 0..{upper - 1}")
    return sorted(set(chosen))


def parse_numbers(text: str | None, kind: type, name: str) -> tuple | None:
    """'8,32,128' -> (8, 32, 128) of `kind`; None -> None."""
    if text is None:
        return None
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--{name}: {text!r} is not a comma-separated list of numbers") from None


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {choice!r}")
    return choice


@attention_app.command("maps")
def maps_command(
    run: RunArgument,
    corpus: CorpusOption,
    seq: Annotated[int, typer.Option("--seq", help="seq_id of the sequence to draw.")],
    out: OutOption,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Layers to draw, e.g. 0,2 or 0-3 (all).")
    ] = None,
    heads: Annotated[str | None, typer.Option("--heads", help="Heads to draw (all).")] = None,
    start: Annotated[int, typer.Option("--start", help="First token of the window.")] = 0,
    length: Annotated[
        int | None,
        typer.Option("--length", help="Tokens to draw (default: the model's context)."),
    ] = None,
    log_color: Annotated[
        bool, typer.Option("--log-color", help="Logarithmic colour scale (default linear).")
    ] = False,
    viewer: Annotated[bool, typer.Option(help="Also write the HTML viewer.")] = True,
    bertviz: Annotated[bool, typer.Option(help="Also write the bertviz JSON export.")] = True,
    dpi: DpiOption = 300,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    check: CheckOption = True,
) -> None:
    """Heatmaps per layer and head (PNG + SVG), a grid, rollout, viewer.html, bertviz JSON."""
    from seqlm.analysis.attention_capture import (
        capture_attention_inputs,
        check_model_fits_corpus,
        corpus_window,
        load_analysis_model,
    )
    from seqlm.analysis.bertviz_export import export_bertviz
    from seqlm.analysis.maps import MapStyle, write_sequence_maps
    from seqlm.analysis.viewer import write_viewer
    from seqlm.corpus import load_corpus

    claim_output(out, "seqlm attention maps")
    model = load_analysis_model(run, weights, _device(device))
    data = load_corpus(corpus)
    check_model_fits_corpus(model, data)
    console = Console()
    caution = interpretation_caution(
        run, data, console, check=check, device=_device(device), weights=weights
    )
    context = model.config.block_size
    if length is not None and not 1 <= length <= context:
        raise ConfigError(f"--length must be in 1..{context} (the model's context)")
    window = corpus_window(data, seq, length or context, start)
    chosen_layers = parse_indices(layers, model.config.n_layer, "layers")
    chosen_heads = parse_indices(heads, model.config.n_head, "heads")
    # every layer is captured (cheap: q, k, v per layer) so that rollout can use them all
    inputs = capture_attention_inputs(model, window.ids)
    where = f"seq {seq} tokens {window.start}-{window.stop - 1}"
    title = with_caution(caution, where)
    style = MapStyle(color_scale="log" if log_color else "linear", dpi=dpi)
    progress = RichProgress()
    try:
        written = write_sequence_maps(
            inputs,
            window.labels,
            out,
            layers=chosen_layers,
            heads=chosen_heads,
            style=style,
            title=title,
            progress=progress,
        )
    finally:
        progress.finish()
    files = [path for paths in written.values() for path in paths]
    if viewer:
        files.append(
            write_viewer(
                inputs,
                window.labels,
                out / "viewer.html",
                layers=chosen_layers,
                heads=chosen_heads,
                title=with_caution(caution, f"seqlm attention: {run.name}, {where}").replace(
                    "\n", " | "
                ),
            )
        )
    if bertviz:
        files.append(
            export_bertviz(
                inputs,
                window.labels,
                out / "attention_bertviz.json",
                layers=chosen_layers,
                heads=chosen_heads,
            )
        )
    console.print(f"{len(files)} files written to {out}  ({window.stop - window.start} tokens)")


@attention_app.command("stats")
def stats_command(
    run: RunArgument,
    corpus: CorpusOption,
    out: OutOption,
    split: Annotated[str, typer.Option("--split", help="train, tuning or held_out.")] = "held_out",
    max_sequences: Annotated[
        int | None,
        typer.Option("--max-sequences", help="At most this many, evenly spaced (all)."),
    ] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Layers (all).")] = None,
    beyond: Annotated[
        str, typer.Option("--beyond", help="Distances k for the mass beyond k tokens.")
    ] = "8,32,128",
    beyond_seconds: Annotated[
        str | None,
        typer.Option("--beyond-seconds", help="Durations for the mass beyond s seconds."),
    ] = None,
    times: Annotated[
        bool, typer.Option(help="Elapsed-time statistics when the corpus has times.bin.")
    ] = True,
    plots: Annotated[bool, typer.Option(help="Draw the figures.")] = True,
    batch_tokens: Annotated[
        int, typer.Option("--batch-tokens", help="Padded tokens per forward pass.")
    ] = 16384,
    dpi: DpiOption = 300,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    check: CheckOption = True,
) -> None:
    """Streaming per-head statistics over a split: tables (parquet + CSV) and figures."""
    from seqlm.analysis.attention_capture import load_analysis_model
    from seqlm.analysis.corpus_stats import AttentionStatsOptions, corpus_attention_statistics
    from seqlm.analysis.stats_plots import write_stats_plots
    from seqlm.analysis.stats_tables import (
        distance_table,
        head_table,
        time_table,
        write_statistics,
    )
    from seqlm.corpus import load_corpus

    claim_output(out, "seqlm attention stats")
    model = load_analysis_model(run, weights, _device(device))
    data = load_corpus(corpus)
    console = Console()
    caution = interpretation_caution(
        run, data, console, check=check, device=_device(device), weights=weights
    )
    chosen_layers = parse_indices(layers, model.config.n_layer, "layers")
    options = AttentionStatsOptions(
        split=split,
        max_sequences=max_sequences,
        layers=None if chosen_layers is None else tuple(chosen_layers),
        beyond_distances=parse_numbers(beyond, int, "beyond") or (),
        use_times=times,
        beyond_seconds=parse_numbers(beyond_seconds, float, "beyond-seconds") or (),
        batch_tokens=batch_tokens,
    )
    progress = RichProgress()
    try:
        stats = corpus_attention_statistics(model, data, options, progress=progress)
    finally:
        progress.finish()
    written = write_statistics(stats, out)
    files = list(written.values())
    if plots:
        title = with_caution(caution, f"run {run.name!r}, {split.replace('_', '-')} split:")
        tables = head_table(stats), distance_table(stats), time_table(stats)
        figures = write_stats_plots(*tables, out, title=title, dpi=dpi, time_unit=stats.time_unit)
        files += [path for paths in figures.values() for path in paths]
    console.print(
        f"{stats.sequences:,} sequences ({stats.windows:,} windows), {stats.queries:,} data "
        f"queries, {len(stats.layers)} layers x {stats.n_heads} heads"
        + ("" if stats.has_times else "; no times.bin, so token distance only")
    )
    console.print(f"{len(files)} files written to {out}")


def register(app: typer.Typer) -> None:
    for module in EXTRA_COMMAND_MODULES:
        importlib.import_module(module)
    app.add_typer(attention_app, name="attention")
