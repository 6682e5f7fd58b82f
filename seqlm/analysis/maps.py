"""Static attention maps: one heatmap per layer and head, a layers x heads grid, rollout.

Every figure is written twice, PNG at 300 dpi and SVG. Rows are queries, columns keys,
both labelled with the token strings (thinned to at most `max_labels` per axis on long
sequences, then prefixed with their position). Cells a query may not see (above the
diagonal, outside the layer's span, in another document) are masked and drawn in light
grey, so an empty-looking cell always means weight ~0, never "not allowed". The colour
bar states its scale: linear from 0, or logarithmic from a stated floor, up to the largest
weight of queries that see more than one key (`colour_scale_top`); larger weights (the
first token's forced 1.0) take the top colour and the bar shows an arrow.

Attention rollout (Abnar & Zuidema, 2020): each layer's head-averaged weights A_l are
mixed with the identity for the residual stream, B_l = (1 - r) A_l + r I (r = 0.5, rows
renormalised), and multiplied from the first layer up, R = B_L ... B_1; row i of R
says how much each input token contributes to position i at the top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqlm.analysis.attention_capture import AttentionInputs
from seqlm.analysis.figures import save_figure
from seqlm.errors import ConfigError
from seqlm.plotting import plain_text, subplots
from seqlm.progress import Progress, ensure_progress

MASKED_COLOUR = "#d9d9d9"


@dataclass
class MapStyle:
    """How maps look. `color_scale` is "linear" (0 to the largest weight shown) or "log"
    (from `log_floor` to the largest weight); `max_labels` thins token labels."""

    max_labels: int = 48
    label_chars: int = 18
    dpi: int = 300
    cmap: str = "viridis"
    color_scale: str = "linear"
    log_floor: float = 1e-3

    def __post_init__(self) -> None:
        if self.color_scale not in ("linear", "log"):
            raise ConfigError(f"color_scale must be 'linear' or 'log', not {self.color_scale!r}")
        if self.max_labels < 2 or self.label_chars < 3 or self.dpi < 50:
            raise ConfigError("max_labels >= 2, label_chars >= 3 and dpi >= 50, please")
        if not 0 < self.log_floor < 1:
            raise ConfigError(f"log_floor must be in (0, 1), got {self.log_floor}")


def thin_labels(
    labels: Sequence[str], max_labels: int, label_chars: int
) -> tuple[list[int], list[str]]:
    """Tick positions and texts: every label when they fit, else every k-th label with
    its position in front ("12 a"). Long token strings are shortened with an ellipsis."""

    def shorten(text: str) -> str:
        return text if len(text) <= label_chars else text[: label_chars - 1] + "…"

    if len(labels) <= max_labels:
        return list(range(len(labels))), [shorten(t) for t in labels]
    step = math.ceil(len(labels) / max_labels)
    positions = list(range(0, len(labels), step))
    return positions, [f"{i} {shorten(labels[i])}" for i in positions]


def _norm(style: MapStyle, largest: float):
    from matplotlib.colors import LogNorm, Normalize

    largest = max(float(largest), 1e-12)
    if style.color_scale == "log":
        floor = min(style.log_floor, largest / 10)
        return LogNorm(vmin=floor, vmax=largest), (
            f"attention weight (log scale, {floor:.0e} to {largest:.2g})"
        )
    return Normalize(vmin=0.0, vmax=largest), f"attention weight (linear scale, 0 to {largest:.2g})"


# Cells above this percentile of the informative weights share the top colour (the
# colour bar's arrow says so). The first few queries see only a handful of keys and put
# weights near 1 on them; with the largest weight as the top, a 100-token map was a
# dark field with a yellow corner.
TOP_PERCENTILE = 99.0
# Grid panels are an overview (position ticks, no token labels): a panel of a longer
# sequence is drawn as block means of at most this many cells a side, so the grid's
# files stay bounded (16 panels of 1,024 tokens were 29 MB of SVG; pooled, ~1 MB).
GRID_PANEL_CELLS = 256


def colour_scale_top(data: np.ma.MaskedArray, percentile: float = TOP_PERCENTILE) -> float:
    """The top of the colour scale: the `percentile` of the weights of queries that see
    more than one key (100 = their largest). A query that sees only itself (the first
    token) always has weight 1 and never sets the scale."""
    if not data.count():
        return 1.0
    informative = data[(~np.ma.getmaskarray(data)).sum(-1) > 1]
    values = np.ma.compressed(informative) if np.ma.count(informative) else np.ma.compressed(data)
    top = float(np.percentile(values, percentile))
    return top if top > 0 else float(values.max()) if values.max() > 0 else 1.0


def _colorbar(figure, image, axes, text: str, clipped: bool, **options) -> None:
    colorbar = figure.colorbar(image, ax=axes, extend="max" if clipped else "neither", **options)
    # two lines: the scale's words on one line would outgrow a small figure's height
    label = text + ("; above: top colour" if clipped else "")
    colorbar.set_label(label.replace(" (", "\n(", 1))


def pooled(data: np.ma.MaskedArray, cells: int = GRID_PANEL_CELLS) -> np.ma.MaskedArray:
    """Block means of a (T, T) masked map with at most `cells` blocks a side (a block
    of masked cells only stays masked); the map itself when it is small enough."""
    length = data.shape[0]
    block = math.ceil(length / cells)
    if block <= 1:
        return data
    padded_length = math.ceil(length / block) * block
    padded = np.ma.masked_all((padded_length, padded_length))
    padded[:length, :length] = data
    n = padded_length // block
    return padded.reshape(n, block, n, block).mean(axis=(1, 3))


def _masked(weights: np.ndarray, visible: np.ndarray | None) -> np.ma.MaskedArray:
    if visible is None:
        visible = np.tril(np.ones(weights.shape, dtype=bool))
    return np.ma.masked_array(weights, mask=~visible)


def _cmap(style: MapStyle):
    import matplotlib

    return matplotlib.colormaps[style.cmap].with_extremes(bad=MASKED_COLOUR)


def _label_axes(axes, labels: Sequence[str], style: MapStyle, size: float) -> None:
    positions, texts = thin_labels(labels, style.max_labels, style.label_chars)
    axes.set_xticks(positions)
    axes.set_xticklabels(texts, rotation=90, fontsize=size)
    axes.set_yticks(positions)
    axes.set_yticklabels(texts, fontsize=size)
    axes.set_xlabel("key (attended-to token)")
    axes.set_ylabel("query (attending token)")


@plain_text
def plot_attention_map(
    weights: np.ndarray,
    labels: Sequence[str],
    out_stem: str | Path,
    *,
    visible: np.ndarray | None = None,
    title: str = "",
    style: MapStyle | None = None,
    largest: float | None = None,
) -> list[Path]:
    """One heatmap of a (T, T) map; writes `out_stem`.png and .svg and returns the paths.

    `visible` (T, T) bool marks the cells the query may see (default: causal); the rest
    are masked. `largest` fixes the top of the colour scale (default: the map's max).
    """
    style = style or MapStyle()
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ConfigError(f"an attention map must be square (T, T), got {weights.shape}")
    if len(labels) != weights.shape[0]:
        raise ConfigError(f"{len(labels)} labels for a map of {weights.shape[0]} tokens")
    data = _masked(weights, visible)
    top = largest if largest is not None else colour_scale_top(data)
    norm, scale_text = _norm(style, top)
    clipped = bool(data.count()) and float(data.max()) > top
    shown = min(len(labels), style.max_labels)
    side = min(12.0, max(5.0, 2.5 + 0.13 * shown))
    font = 8 if shown <= 32 else 6
    figure, axes = subplots(figsize=(side + 1.5, side))
    image = axes.imshow(data, cmap=_cmap(style), norm=norm, interpolation="none")
    _label_axes(axes, labels, style, font)
    _colorbar(figure, image, axes, scale_text, clipped, fraction=0.046, pad=0.03)
    axes.set_title(
        f"{title}\ngrey: not visible to the query (causal / span / document mask)", fontsize=9
    )
    return save_figure(figure, Path(out_stem), style.dpi)


@plain_text
def plot_attention_grid(
    maps: dict[tuple[int, int], np.ndarray],
    visible: dict[int, np.ndarray] | None,
    out_stem: str | Path,
    *,
    title: str = "",
    style: MapStyle | None = None,
) -> list[Path]:
    """A layers x heads grid of maps {(layer, head): (T, T)} on one shared colour scale.

    Panels carry position ticks only (token labels would not be readable at this size;
    the single maps have them). `visible` gives each layer's (T, T) mask.
    """
    from matplotlib.ticker import MaxNLocator

    style = style or MapStyle()
    if not maps:
        raise ConfigError("no maps to draw")
    layers = sorted({layer for layer, _ in maps})
    heads = sorted({head for _, head in maps})
    masked = {
        key: pooled(
            _masked(np.asarray(m, dtype=np.float64), None if visible is None else visible[key[0]])
        )
        for key, m in maps.items()
    }
    length = next(iter(maps.values())).shape[0]
    # Axes in token positions also when the panels show block means.
    extent = (-0.5, length - 0.5, length - 0.5, -0.5)
    top = max(colour_scale_top(m) for m in masked.values())
    norm, scale_text = _norm(style, top)
    clipped = any(m.count() and float(m.max()) > top for m in masked.values())
    panel = 2.4 if len(heads) * len(layers) > 16 else 3.0
    figure, axes = subplots(
        len(layers),
        len(heads),
        figsize=(max(panel * len(heads) + 1.6, 6.0), panel * len(layers) + 0.9),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            if (layer, head) not in masked:
                ax.axis("off")
                continue
            image = ax.imshow(
                masked[(layer, head)],
                cmap=_cmap(style),
                norm=norm,
                interpolation="none",
                extent=extent,
            )
            ax.tick_params(labelsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
            if r == 0:
                ax.set_title(f"head {head}", fontsize=10)
            if c == 0:
                ax.set_ylabel(f"layer {layer}\nquery position", fontsize=9)
            if r == len(layers) - 1:
                ax.set_xlabel("key position", fontsize=8)
    _colorbar(figure, image, axes, scale_text, clipped, shrink=0.8)
    note = "grey: not visible"
    shown = next(iter(masked.values())).shape[0]
    if shown < length:
        note += f"; block means of {math.ceil(length / shown)}x{math.ceil(length / shown)} tokens"
    figure.suptitle(f"{title}\n({note})" if title else note)
    return save_figure(figure, Path(out_stem), style.dpi)


def attention_rollout(layer_maps: Sequence[np.ndarray], residual: float = 0.5) -> np.ndarray:
    """Rollout of head-averaged maps, first layer first (see module doc): (T, T).

    `residual` is the identity's share r; rows of every mixed map are renormalised.
    """
    if not layer_maps:
        raise ConfigError("attention rollout needs at least one layer")
    if not 0 <= residual < 1:
        raise ConfigError(f"residual share must be in [0, 1), got {residual}")
    length = np.asarray(layer_maps[0]).shape[0]
    rollout = np.eye(length)
    for weights in layer_maps:
        mixed = (1 - residual) * np.asarray(weights, dtype=np.float64) + residual * np.eye(length)
        mixed /= mixed.sum(-1, keepdims=True)
        rollout = mixed @ rollout
    return rollout


def write_sequence_maps(
    inputs: AttentionInputs,
    labels: Sequence[str],
    out: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    row: int = 0,
    style: MapStyle | None = None,
    title: str = "",
    progress: Progress | None = None,
) -> dict[str, list[Path]]:
    """All static figures for one row of `inputs`: a map per chosen (layer, head), the
    grid, and (when every layer was captured) the rollout. Returns {figure: paths}.

    Maps are built one head at a time; the grid holds the chosen heads' maps together,
    so choose few layers and heads for long sequences.
    """
    style = style or MapStyle()
    out = Path(out)
    layers = sorted(inputs.layers) if layers is None else list(layers)
    chosen_heads = list(range(inputs.n_heads)) if heads is None else list(heads)
    written: dict[str, list[Path]] = {}
    tracker = ensure_progress(progress)
    tracker.start("attention maps", total=len(layers) * len(chosen_heads) + 2)
    grid: dict[tuple[int, int], np.ndarray] = {}
    visible = {layer: inputs.visible(layer, row).cpu().numpy() for layer in layers}
    for layer in layers:
        maps = inputs.weights(layer, chosen_heads, row=row).numpy()
        for index, head in enumerate(chosen_heads):
            name = f"layer{layer}_head{head}"
            written[name] = plot_attention_map(
                maps[index],
                labels,
                out / name,
                visible=visible[layer],
                title=f"{title} layer {layer}, head {head}".strip(),
                style=style,
            )
            grid[(layer, head)] = maps[index]
            tracker.advance()
    written["grid"] = plot_attention_grid(
        grid, visible, out / "grid", title=f"{title} layers x heads".strip(), style=style
    )
    tracker.advance()
    all_layers = sorted(inputs.layers)
    if all_layers == list(range(len(all_layers))):
        rollout = attention_rollout(
            [inputs.head_mean(layer, row=row).numpy() for layer in all_layers]
        )
        written["rollout"] = plot_attention_map(
            rollout,
            labels,
            out / "rollout",
            title=f"{title} attention rollout over {len(all_layers)} layers (Abnar & Zuidema)".strip(),
            style=style,
        )
    tracker.advance()
    tracker.finish()
    return written
