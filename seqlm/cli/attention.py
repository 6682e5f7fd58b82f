"""`seqlm attention maps|stats`: attention figures for one sequence, statistics over a split.

The group is `attention_app`; `seqlm.cli.attention_experiments` adds span and heads to it.
The analysis modules are imported inside the commands: they import torch, which
`seqlm --help` and every other command should not wait for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from seqlm.analysis.captions import with_caution
from seqlm.cli.progress_bar import RichProgress
from seqlm.cli.trust_gate import CheckOption, interpretation_caution
from seqlm.outputs import claim_output

attention_app = typer.Typer(
    help="Attention analysis of a trained run: maps, corpus statistics.", no_args_is_help=True
)

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
    from seqlm.analysis.maps_run import MapsSettings, attention_maps
    from seqlm.analysis.run_inputs import resolve_device

    settings = MapsSettings(
        seq=seq,
        layers=layers,
        heads=heads,
        start=start,
        length=length,
        log_color=log_color,
        viewer=viewer,
        bertviz=bertviz,
        dpi=dpi,
        weights=weights,
        device=device,
    )
    console = Console()

    def gate(data: Any) -> str:  # noqa: ANN401 (Corpus)
        chosen = resolve_device(device, strict=True)
        return interpretation_caution(
            run, data, console, check=check, device=chosen, weights=weights
        )

    progress = RichProgress()
    try:
        result = attention_maps(run, corpus, settings, out, gate=gate, progress=progress)
    finally:
        progress.finish()
    window = result.window
    console.print(
        f"{len(result.files)} files written to {out}  ({window.stop - window.start} tokens)"
    )


QueriesOption = Annotated[
    str | None,
    typer.Option(
        "--queries",
        help="Count only query rows whose token is one of these (comma-separated "
        "token strings); keys stay all data tokens.",
    ),
]
QueryTargetsOption = Annotated[
    str | None,
    typer.Option(
        "--query-targets",
        help="Count only query rows whose next token (the target) is one of these, e.g. "
        "a planted dependency's answers.",
    ),
]
DistanceEdgesOption = Annotated[
    str | None,
    typer.Option(
        "--distance-edges",
        help="Token-distance bin edges; a bin runs from its edge up to, not including, the "
        "next, so 3990,4011 is the band 3,990-4,010 (0 is added first; default: unit bins "
        "to 16, then half-octaves).",
    ),
]


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
    queries: QueriesOption = None,
    query_targets: QueryTargetsOption = None,
    distance_edges: DistanceEdgesOption = None,
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
    from seqlm.analysis.run_inputs import parse_indices, parse_numbers, resolve_device
    from seqlm.analysis.stats_bins import chosen_distance_edges
    from seqlm.corpus import load_corpus

    edges = parse_numbers(distance_edges, int, "distance-edges")
    edges = None if edges is None else chosen_distance_edges(edges)
    claim_output(out, "seqlm attention stats")
    model = load_analysis_model(run, weights, resolve_device(device, strict=True))
    data = load_corpus(corpus)
    console = Console()
    caution = interpretation_caution(
        run, data, console, check=check, device=resolve_device(device, strict=True), weights=weights
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
        distance_edges=edges,
        query_tokens=_token_list(queries, "--queries"),
        query_targets=_token_list(query_targets, "--query-targets"),
    )
    progress = RichProgress()
    try:
        stats = corpus_attention_statistics(model, data, options, progress=progress)
    finally:
        progress.finish()
    title = f"run {run.name!r}, {split.replace('_', '-')} split"
    files = _write_stats(stats, out, with_caution(caution, title), dpi if plots else None)
    console.print(
        f"{stats.sequences:,} sequences ({stats.windows:,} windows), {stats.queries:,} data "
        f"queries, {len(stats.layers)} layers x {stats.n_heads} heads"
        + ("" if stats.has_times else "; no times.bin, so token distance only")
    )
    if options.filtered:
        console.print(f"every figure averages over {stats.rows_note()}")
    console.print(f"{len(files)} files written to {out}")


def _write_stats(stats: Any, out: Path, title: str, dpi: int | None) -> list[Path]:  # noqa: ANN401
    """Tables and summary, and (`dpi` given) the figures, titled with `title` and, under a
    query-row filter, which rows were counted."""
    from seqlm.analysis.stats_plots import write_stats_plots
    from seqlm.analysis.stats_tables import (
        distance_table,
        head_table,
        time_table,
        write_statistics,
    )

    files = list(write_statistics(stats, out).values())
    if dpi is not None:
        rows = f" ({stats.rows_note()})" if stats.options.filtered else ""
        tables = head_table(stats), distance_table(stats), time_table(stats)
        figures = write_stats_plots(
            *tables, out, title=f"{title}{rows}:", dpi=dpi, time_unit=stats.time_unit
        )
        files += [path for paths in figures.values() for path in paths]
    return files


def _token_list(text: str | None, option: str) -> tuple[str, ...]:
    """'W,X,Z' -> ('W', 'X', 'Z'); None -> () (no filter); given but empty: an error."""
    from seqlm.errors import ConfigError

    if text is None:
        return ()
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    if not tokens:
        raise ConfigError(f"{option}: {text!r} names no token; give comma-separated tokens")
    return tokens


def register(app: typer.Typer) -> None:
    app.add_typer(attention_app, name="attention")
