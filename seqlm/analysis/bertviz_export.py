"""Attention weights in the shape bertviz's `head_view` takes, as plain JSON.

bertviz's `head_view(attention, tokens)` wants `attention` as a list with one tensor
per layer, each (batch=1, heads, T, T), and `tokens` a list of T strings. The export is
JSON (never pickle):

    {"format": "seqlm-bertviz-1", "tokens": [...], "layers": [0, 1, ...],
     "heads": [0, 1, ...], "attention": [[[[w, ...], ...], ...]]]}

`attention[l]` is the (1, heads, T, T) nested list of `layers[l]`. To look at it in a
notebook with bertviz installed (seqlm does not depend on it):

    import json, torch
    from bertviz import head_view
    data = json.load(open("attention_bertviz.json"))
    head_view([torch.tensor(a) for a in data["attention"]], data["tokens"])

or `head_view(*load_bertviz_attention("attention_bertviz.json"))` with seqlm installed.
bertviz numbers the layers 0..L-1 in its menu; `layers` says which model layers they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from seqlm.analysis.attention_capture import AttentionInputs
from seqlm.errors import ConfigError, InputError

FORMAT = "seqlm-bertviz-1"
# Weights are rounded to this many decimals: enough for any plot, and a third the size.
DECIMALS = 6


def bertviz_data(
    inputs: AttentionInputs,
    labels: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    row: int = 0,
) -> dict:
    """The JSON-ready dict (see module doc) for one row of `inputs`."""
    if len(labels) != inputs.length:
        raise ConfigError(f"{len(labels)} labels for {inputs.length} tokens")
    layers = sorted(inputs.layers) if layers is None else list(layers)
    heads = list(range(inputs.n_heads)) if heads is None else list(heads)
    attention = []
    for layer in layers:
        weights = inputs.weights(layer, heads, row=row)
        attention.append(torch.round(weights, decimals=DECIMALS)[None].tolist())
    return {
        "format": FORMAT,
        "tokens": [str(t) for t in labels],
        "layers": layers,
        "heads": heads,
        "attention": attention,
    }


def export_bertviz(
    inputs: AttentionInputs,
    labels: Sequence[str],
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    row: int = 0,
) -> Path:
    """Write `bertviz_data(...)` as JSON to `path`; returns the path."""
    data = bertviz_data(inputs, labels, layers=layers, heads=heads, row=row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    return path


def load_bertviz_attention(path: str | Path) -> tuple[list[torch.Tensor], list[str]]:
    """(attention, tokens) ready for `bertviz.head_view(attention, tokens)`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"not a readable JSON file: {err}", file=path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a seqlm bertviz export (format {FORMAT!r})", file=path)
    tokens = data.get("tokens")
    try:
        attention = [torch.tensor(layer, dtype=torch.float32) for layer in data["attention"]]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"attention is not nested lists of numbers: {err}", file=path, column="attention"
        ) from None
    length = len(tokens) if isinstance(tokens, list) else -1
    for index, layer in enumerate(attention):
        if layer.ndim != 4 or layer.shape[0] != 1 or layer.shape[2:] != (length, length):
            raise InputError(
                f"layer {index} has shape {tuple(layer.shape)}, expected (1, heads, {length}, {length})",
                file=path,
                column="attention",
            )
    return attention, [str(t) for t in tokens]
