"""Attention maps of one corpus sequence as one call (`seqlm attention maps`): load the
run and its corpus, capture every layer on the window, and write the heatmaps, the grid,
the rollout, the HTML viewer and the bertviz JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqlm.analysis.attention_capture import (
    AttentionInputs,
    CorpusWindow,
    capture_attention_inputs,
    corpus_window,
)
from seqlm.analysis.bertviz_export import export_bertviz
from seqlm.analysis.captions import with_caution
from seqlm.analysis.maps import MapStyle, write_sequence_maps
from seqlm.analysis.run_inputs import (
    CautionGate,
    load_model_and_corpus,
    no_caution,
    parse_indices,
    resolve_device,
)
from seqlm.analysis.viewer import write_viewer
from seqlm.errors import ConfigError
from seqlm.outputs import output_folder, output_lock
from seqlm.progress import Progress


@dataclass(frozen=True)
class MapsSettings:
    """Which window of which sequence, which layers and heads, and what to write."""

    seq: int = field(default=0, metadata={"help": "seq_id of the sequence to draw."})
    layers: str | None = field(
        default=None, metadata={"help": "Layers to draw, e.g. 0,2 or 0-3 (None: all)."}
    )
    heads: str | None = field(default=None, metadata={"help": "Heads to draw (None: all)."})
    start: int = field(default=0, metadata={"help": "First token of the window."})
    length: int | None = field(
        default=None, metadata={"help": "Tokens to draw (None: the model's context)."}
    )
    log_color: bool = field(
        default=False, metadata={"help": "Logarithmic colour scale (default linear)."}
    )
    viewer: bool = field(default=True, metadata={"help": "Also write the HTML viewer."})
    bertviz: bool = field(default=True, metadata={"help": "Also write the bertviz JSON export."})
    dpi: int = field(default=300, metadata={"help": "Resolution of the PNG figures."})
    weights: str = field(
        default="auto", metadata={"help": "auto (best if kept, else latest), latest or best."}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})


@dataclass
class MapsRun:
    """The files written and the window drawn."""

    files: list[Path]
    window: CorpusWindow


def attention_maps(
    run: Path,
    corpus: Path,
    settings: MapsSettings,
    out: Path,
    *,
    gate: CautionGate = no_caution,
    progress: Progress | None = None,
) -> MapsRun:
    """Draw `settings.seq` of `corpus` with `run`'s model into `out` (locked against other
    seqlm writers from the start); `gate` runs right after loading and its caption heads
    every figure and the viewer."""
    with output_lock(output_folder(out), "seqlm attention maps"):
        return _attention_maps(run, corpus, settings, out, gate, progress)


def _attention_maps(
    run: Path,
    corpus: Path,
    settings: MapsSettings,
    out: Path,
    gate: CautionGate,
    progress: Progress | None,
) -> MapsRun:
    device = resolve_device(settings.device, strict=True)
    model, data = load_model_and_corpus(run, corpus, settings.weights, device)
    caution = gate(data)
    context = model.config.block_size
    length = settings.length
    if length is not None and not 1 <= length <= context:
        raise ConfigError(f"--length must be in 1..{context} (the model's context)")
    window = corpus_window(data, settings.seq, length or context, settings.start)
    layers = parse_indices(settings.layers, model.config.n_layer, "layers")
    heads = parse_indices(settings.heads, model.config.n_head, "heads")
    # every layer is captured (cheap: q, k, v per layer) so that rollout can use them all
    inputs = capture_attention_inputs(model, window.ids)
    where = f"seq {settings.seq} tokens {window.start}-{window.stop - 1}"
    style = MapStyle(color_scale="log" if settings.log_color else "linear", dpi=settings.dpi)
    written = write_sequence_maps(
        inputs,
        window.labels,
        out,
        layers=layers,
        heads=heads,
        style=style,
        title=with_caution(caution, where),
        progress=progress,
    )
    files = [path for paths in written.values() for path in paths]
    viewer_title = with_caution(caution, f"seqlm attention: {run.name}, {where}")
    files += _interactive_files(inputs, window, out, settings, layers, heads, viewer_title)
    return MapsRun(files, window)


def _interactive_files(
    inputs: AttentionInputs,
    window: CorpusWindow,
    out: Path,
    settings: MapsSettings,
    layers: list[int] | None,
    heads: list[int] | None,
    viewer_title: str,
) -> list[Path]:
    """viewer.html and attention_bertviz.json, as `settings` asks."""
    files = []
    if settings.viewer:
        title = viewer_title.replace("\n", " | ")
        files.append(
            write_viewer(
                inputs, window.labels, out / "viewer.html", layers=layers, heads=heads, title=title
            )
        )
    if settings.bertviz:
        path = out / "attention_bertviz.json"
        files.append(export_bertviz(inputs, window.labels, path, layers=layers, heads=heads))
    return files
