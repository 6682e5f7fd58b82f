"""The elapsed-time and sink pass of the corpus attention statistics: one chunk of
queries at a time, the layers with one span sharing the chunk's geometry (which keys
are visible data keys, their elapsed seconds and time bins)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqlm.analysis.attention_capture import (
    AttentionInputs,
    CapturedAttention,
    default_chunk_queries,
)


@dataclass
class ElapsedTimeSums:
    """One layer's sums over counted queries, by elapsed seconds (heads first)."""

    mass_sum: np.ndarray  # (H, bins)
    elapsed_sum: np.ndarray  # (H,)
    beyond_sum: np.ndarray  # (H, len(beyond_seconds))
    uniform_mass_sum: np.ndarray  # (bins,)
    uniform_elapsed_sum: float = 0.0


@dataclass
class _ChunkGeometry:
    """What a chunk of queries shares across the layers with one span: the visible data
    keys and, with times, the elapsed seconds and their bins."""

    first: int
    visible: Tensor  # (1 | B, 1, C, K) bool, the layer mask
    data_key: Tensor  # (B, 1, 1, K) bool
    elapsed: Tensor | None  # (B, C, K) float32 seconds
    bins: Tensor | None  # (B, C, K) time-bin index


def _chunk_geometry(
    mask: Tensor,
    span: int | None,
    start: int,
    stop: int,
    data: Tensor,
    times: Tensor | None,
    edges: Tensor | None,
    counts_out: Tensor,
    time_sums: ElapsedTimeSums | None,
    counted: Tensor,
) -> _ChunkGeometry:
    """The chunk's geometry for one span; writes the data-key counts into `counts_out` and
    adds the uniform-attention elapsed-time baselines of the `counted` queries (B, chunk)
    to `time_sums`."""
    first = 0 if span is None else max(0, start - span + 1)
    visible = mask[..., start:stop, first:stop]
    data_key = data[:, None, None, first:stop]
    data_visible = (visible & data_key)[:, 0]  # (B, C, K)
    counts = data_visible.sum(-1)
    counts_out[:, start:stop] = counts
    if times is None:
        return _ChunkGeometry(first, visible, data_key, None, None)
    elapsed = (times[:, start:stop, None] - times[:, None, first:stop]).clamp(min=0)
    bins = (torch.bucketize(elapsed, edges, right=True) - 1).clamp(min=0)
    uniform = data_visible.double() / counts.clamp(min=1)[..., None]
    uniform_mass = uniform.new_zeros((*uniform.shape[:-1], len(edges)))
    uniform_mass.scatter_add_(-1, bins, uniform)
    time_sums.uniform_mass_sum += as_numpy((uniform_mass * counted[..., None]).sum((0, 1)))
    time_sums.uniform_elapsed_sum += float(((uniform * elapsed).sum(-1) * counted).sum())
    return _ChunkGeometry(first, visible, data_key, elapsed.float(), bins)


def _layer_chunk(
    captured: CapturedAttention,
    geometry: _ChunkGeometry,
    start: int,
    stop: int,
    counted: Tensor,
    beyond_seconds: tuple[float, ...],
    n_bins: int,
    time_sums: ElapsedTimeSums | None,
) -> Tensor:
    """One layer on one chunk: returns the sink mass sum per head, adds to `time_sums`.

    One log-sum-exp over the visible keys gives the sink mass from the few excluded key
    columns; with times, a second one over the data keys gives the renormalised weights.
    """
    first = geometry.first
    q, k = captured.q[:, :, start:stop].float(), captured.k[:, :, first:stop].float()
    weight = counted[:, None].double()
    scores = (q @ k.transpose(-1, -2)) * captured.scale
    scores.masked_fill_(~geometry.visible, -math.inf)
    # Uncounted queries (BOS, EOS, padding) may see no key at all: a 0 there keeps NaNs
    # out of the log-sum-exp. Their weights below must then be zeroed, not multiplied by a
    # zero weight: exp(score - 0) overflows to inf for a sharp head (score > 88), and
    # inf * 0 is NaN (issue 20: 9 of 16 heads of a trained MIMIC model came out NaN).
    uncounted = ~counted[:, None, :, None]  # (B, 1, C, 1)
    log_all = torch.logsumexp(scores, -1).masked_fill_(~counted[:, None], 0.0)
    excluded = ~geometry.data_key[:, 0, 0]  # (B, K)
    columns = torch.nonzero(excluded.any(0)).flatten()
    sink = torch.zeros(scores.shape[1], dtype=torch.float64, device=scores.device)
    if columns.numel():
        on_excluded = torch.exp(scores[..., columns] - log_all[..., None]).masked_fill_(
            uncounted, 0.0
        )
        part = (on_excluded * excluded[:, columns][:, None, None, :]).sum(-1)
        sink = (part.double() * weight).sum((0, 2))
    if time_sums is None:
        return sink
    scores.masked_fill_(~geometry.data_key, -math.inf)
    log_data = torch.logsumexp(scores, -1).masked_fill_(~counted[:, None], 0.0)
    probs = torch.exp(scores - log_data[..., None])  # (B, H, C, K), 0 off the data keys
    probs.masked_fill_(uncounted, 0.0)
    elapsed = geometry.elapsed[:, None]
    mass = probs.new_zeros((*probs.shape[:-1], n_bins))
    mass.scatter_add_(-1, geometry.bins[:, None].expand_as(probs), probs)
    time_sums.mass_sum += as_numpy((mass.double() * weight[..., None]).sum((0, 2)))
    mean_elapsed = (probs * elapsed).sum(-1).double()
    time_sums.elapsed_sum += as_numpy((mean_elapsed * weight).sum((0, 2)))
    for index, limit in enumerate(beyond_seconds):
        beyond = (probs * (elapsed > limit)).sum(-1).double()
        time_sums.beyond_sum[:, index] += as_numpy((beyond * weight).sum((0, 2)))
    return sink


def sink_and_time_pass(
    inputs: AttentionInputs,
    layers: Sequence[int],
    data: Tensor,
    times: Tensor | None,
    time_edges: tuple[float, ...] | None,
    beyond_seconds: tuple[float, ...],
    chunk_queries: int | None,
    counted: Tensor | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, Tensor], dict[int, ElapsedTimeSums | None]]:
    """Sink mass, data-key counts and (with times) elapsed-time sums of every layer.

    `data` (B, T) marks the data tokens (the keys, and the queries counted unless
    `counted`, a subset of them, says which query rows to count).

    Chunks of queries outside, layers inside: the elapsed times, their bins and the
    uniform baselines of a chunk are computed once per distinct span, not per layer.
    Returns ({layer: sink sum (H,)}, {layer: data keys per query (B, T)}, {layer: sums}).
    """
    reference = inputs.layers[layers[0]]
    device = reference.q.device
    rows, heads, length, _ = reference.q.shape
    data = data.to(device)
    counted_rows = data if counted is None else counted.to(device)
    step = chunk_queries or default_chunk_queries(rows, heads, length)
    spans = {layer: inputs.spans[layer] for layer in layers}
    edges = None
    if times is not None:
        times = times.to(device)
        edges = torch.tensor(time_edges, dtype=torch.float64, device=device)
    counts = {
        span: torch.zeros(rows, length, dtype=torch.long, device=device) for span in spans.values()
    }
    uniform_sums = {
        span: empty_time_sums(heads, time_edges, beyond_seconds) if times is not None else None
        for span in spans.values()
    }
    layer_sums = {
        layer: empty_time_sums(heads, time_edges, beyond_seconds) if times is not None else None
        for layer in layers
    }
    sinks = {layer: torch.zeros(heads, dtype=torch.float64, device=device) for layer in layers}
    n_bins = 0 if time_edges is None else len(time_edges)
    for start in range(0, length, step):
        stop = min(start + step, length)
        counted = counted_rows[:, start:stop]
        geometry: dict[int | None, _ChunkGeometry] = {}
        for layer in layers:
            span = spans[layer]
            if span not in geometry:
                geometry[span] = _chunk_geometry(
                    inputs.layers[layer].mask, span, start, stop, data, times, edges,
                    counts[span], uniform_sums[span], counted,
                )  # fmt: skip
            sinks[layer] += _layer_chunk(
                inputs.layers[layer], geometry[span], start, stop, counted, beyond_seconds,
                n_bins, layer_sums[layer],
            )  # fmt: skip
    for layer, sums in layer_sums.items():
        if sums is not None:
            uniform = uniform_sums[spans[layer]]
            sums.uniform_mass_sum += uniform.uniform_mass_sum
            sums.uniform_elapsed_sum += uniform.uniform_elapsed_sum
    return (
        {layer: as_numpy(sink) for layer, sink in sinks.items()},
        {layer: counts[spans[layer]] for layer in layers},
        layer_sums,
    )


def empty_time_sums(
    heads: int, time_edges: tuple[float, ...], beyond_seconds: tuple[float, ...]
) -> ElapsedTimeSums:
    return ElapsedTimeSums(
        mass_sum=np.zeros((heads, len(time_edges))),
        elapsed_sum=np.zeros(heads),
        beyond_sum=np.zeros((heads, len(beyond_seconds))),
        uniform_mass_sum=np.zeros(len(time_edges)),
    )


def as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
