"""A self-contained interactive HTML attention viewer: pick a layer and head, hover tokens.

One file, all JavaScript and data inlined, no CDN, no network (a Content-Security-Policy
forbids any fetch): it opens offline in any browser. The page draws the chosen map on a
canvas (grey where the query may not see the key), shows the weight under the cursor,
and shades the tokens by how much the hovered token attends to each. When it has drawn,
it writes "rendered ..." into `#status` and sets `data-rendered="true"` there (what the
test in a headless browser checks).

Weights are stored as the lower triangle of each map in uint16 (0 = not visible, else
1 + round(w * 65534)), base64: a resolution of 1.5e-5, 1 byte per cell on average.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from seqlm.analysis.attention_capture import AttentionInputs
from seqlm.errors import ConfigError, CorpusError

TEMPLATE = "viewer_template.html"
# Encoded weights above this make a page browsers struggle with; choose fewer heads.
MAX_ENCODED_BYTES = 64 * 1024 * 1024


def encode_map(weights: np.ndarray, visible: np.ndarray) -> str:
    """Lower triangle of a (T, T) map as base64 uint16 (see module doc)."""
    weights = np.asarray(weights, dtype=np.float64)
    rows, cols = np.tril_indices(weights.shape[0])
    values = np.clip(weights[rows, cols], 0.0, 1.0)
    encoded = np.where(visible[rows, cols], 1 + np.rint(values * 65534), 0).astype("<u2")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def decode_map(text: str, length: int) -> np.ndarray:
    """The inverse of `encode_map`: (T, T) weights, NaN where not visible."""
    values = np.frombuffer(base64.b64decode(text), dtype="<u2").astype(np.float64)
    out = np.full((length, length), np.nan)
    rows, cols = np.tril_indices(length)
    out[rows, cols] = np.where(values == 0, np.nan, (values - 1) / 65534)
    return out


def _script_json(data: dict) -> str:
    """JSON safe inside a <script> element: no `</script>`, `<!--` or `&` survives."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(
    labels: Sequence[str],
    maps: dict[tuple[int, int], np.ndarray],
    visible: dict[int, np.ndarray],
    *,
    title: str = "seqlm attention",
) -> str:
    """The page for maps {(layer, head): (T, T)} with each layer's (T, T) visibility."""
    if not maps:
        raise ConfigError("the viewer needs at least one map")
    length = len(labels)
    for key, weights in maps.items():
        if np.shape(weights) != (length, length):
            raise ConfigError(f"map {key} is {np.shape(weights)}, expected ({length}, {length})")
    estimated = len(maps) * length * (length + 1) * 4 // 3
    if estimated > MAX_ENCODED_BYTES:
        raise ConfigError(
            f"{len(maps)} maps of {length} tokens would make a {estimated / 2**20:.0f} MB page; "
            "choose fewer layers or heads, or a shorter stretch of the sequence"
        )
    data = {
        "tokens": [str(t) for t in labels],
        "layers": sorted({layer for layer, _ in maps}),
        "heads": sorted({head for _, head in maps}),
        "maps": {
            f"{layer}/{head}": encode_map(weights, np.asarray(visible[layer], dtype=bool))
            for (layer, head), weights in sorted(maps.items())
        },
    }
    try:
        template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as err:
        raise CorpusError(f"the viewer template {TEMPLATE} is missing from seqlm: {err}") from None
    page = template.replace("__TITLE__", html.escape(title))
    return page.replace("__DATA__", _script_json(data))


def write_viewer(
    inputs: AttentionInputs,
    labels: Sequence[str],
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    row: int = 0,
    title: str = "seqlm attention",
) -> Path:
    """Write the viewer for one row of `inputs` (chosen layers and heads) to `path`."""
    layers = sorted(inputs.layers) if layers is None else list(layers)
    heads = list(range(inputs.n_heads)) if heads is None else list(heads)
    maps: dict[tuple[int, int], np.ndarray] = {}
    visible: dict[int, np.ndarray] = {}
    for layer in layers:
        visible[layer] = inputs.visible(layer, row).cpu().numpy()
        weights = inputs.weights(layer, heads, row=row).numpy()
        for index, head in enumerate(heads):
            maps[(layer, head)] = weights[index]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(viewer_html(labels, maps, visible, title=title), encoding="utf-8")
    return path
