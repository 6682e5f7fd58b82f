"""Attention statistics per head without a T x T matrix.

For queries q and keys k (B, H, T, d) under the causal mask (plus, optionally, the
model's attention window and document boundaries), this computes per head, averaged
over the counted queries (not BOS, not padding):

- `distance_histogram`: the attention mass by token distance i - j, in bins
  [e_0, e_1), ..., [e_last, inf) given by `distance_edges` (e_0 = 0);
- `mean_distance`: sum_j p_ij (i - j), and `uniform_mean_distance`, its value were
  attention spread evenly over the n_i visible keys: (n_i - 1) / 2;
- `entropy`: -sum_j p_ij log p_ij (nats), and `normalized_entropy`: entropy / log n_i
  over queries with n_i > 1 (1 = uniform, 0 = all mass on one key);
- `mass_beyond`: the mass on keys at distance > k, for each k in `beyond_distances`.

Implementations, chosen by `attention_statistics` (the dispatcher):

- `reference`: the full softmax (B, H, T, T), every statistic computed directly.
- `chunked`: the same, for `chunk_queries` queries at a time: peak memory
  O(B x H x chunk x T), any device.
- `flex`: no score matrix at all, from log-sum-exps and extra value channels of
  FlexAttention (compiled, CUDA): the mass within distance < w is
  exp(lse_window(w) - lse_full); the mean key position E[j] comes from attending over
  values v_j = j, so mean distance = i - E[j]; and since the scores are
  s_ij = scale * q_i . k_j, E[s] = scale * q_i . E[k] comes from attending over values
  v_j = k_j, so entropy = lse - E[s]. Each windowed pass costs O(T x w).

Documents are contiguous runs of equal `doc_ids` (as packing makes them). The results
are sums with counts (`AttentionStatistics`), so batches and sequences merge exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlm.errors import ConfigError
from seqlm.kernels.dispatch import choose_impl
from seqlm.kernels.windowed_attention import (
    check_attention_arguments,
    flex_attention_call,
    windowed_block_mask,
    windowed_causal_mask,
)
from seqlm.progress import Progress, ensure_progress

IMPLEMENTATIONS: tuple[str, ...] = ("reference", "chunked", "flex")
DEFAULT_DISTANCE_EDGES: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DEFAULT_BEYOND_DISTANCES: tuple[int, ...] = (8, 32, 128)


@dataclass
class AttentionStatistics:
    """Per-head sums over counted queries; the properties give the averages.

    Tensors are float64 on CPU with heads first: (H,), or (H, bins) / (H, distances).
    """

    distance_edges: tuple[int, ...]
    beyond_distances: tuple[int, ...]
    queries: int
    normalizable_queries: int  # queries with more than one visible key
    distance_mass_sum: Tensor
    distance_sum: Tensor
    uniform_distance_sum: float
    entropy_sum: Tensor
    normalized_entropy_sum: Tensor
    beyond_mass_sum: Tensor

    @property
    def distance_histogram(self) -> Tensor:
        return self.distance_mass_sum / max(self.queries, 1)

    @property
    def mean_distance(self) -> Tensor:
        return self.distance_sum / max(self.queries, 1)

    @property
    def uniform_mean_distance(self) -> float:
        return self.uniform_distance_sum / max(self.queries, 1)

    @property
    def entropy(self) -> Tensor:
        return self.entropy_sum / max(self.queries, 1)

    @property
    def normalized_entropy(self) -> Tensor:
        return self.normalized_entropy_sum / max(self.normalizable_queries, 1)

    @property
    def mass_beyond(self) -> Tensor:
        return self.beyond_mass_sum / max(self.queries, 1)

    def merge(self, other: AttentionStatistics) -> AttentionStatistics:
        """The statistics of both sets of queries together (same heads and bins)."""
        if (self.distance_edges, self.beyond_distances) != (
            other.distance_edges,
            other.beyond_distances,
        ) or self.distance_sum.shape != other.distance_sum.shape:
            raise ConfigError("attention statistics with different heads or bins cannot merge")
        return AttentionStatistics(
            self.distance_edges,
            self.beyond_distances,
            self.queries + other.queries,
            self.normalizable_queries + other.normalizable_queries,
            self.distance_mass_sum + other.distance_mass_sum,
            self.distance_sum + other.distance_sum,
            self.uniform_distance_sum + other.uniform_distance_sum,
            self.entropy_sum + other.entropy_sum,
            self.normalized_entropy_sum + other.normalized_entropy_sum,
            self.beyond_mass_sum + other.beyond_mass_sum,
        )


def _check_statistics_arguments(
    q: Tensor,
    k: Tensor,
    window: int | None,
    doc_ids: Tensor | None,
    query_mask: Tensor | None,
    distance_edges: Sequence[int],
    beyond_distances: Sequence[int],
) -> None:
    check_attention_arguments(q, k, window, doc_ids, "attention_statistics")
    if query_mask is not None and query_mask.shape != (q.shape[0], q.shape[2]):
        raise ConfigError("attention_statistics: query_mask must be (batch, tokens)")
    edges = list(distance_edges)
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ConfigError(
            f"attention_statistics: distance_edges must start at 0 and increase, not {edges}"
        )
    if any(d < 0 for d in beyond_distances):
        raise ConfigError("attention_statistics: beyond_distances must be >= 0")


def _summarise(
    bin_mass: Tensor,
    distance: Tensor,
    entropy: Tensor,
    beyond: Tensor,
    key_counts: Tensor,
    counted: Tensor,
    distance_edges: tuple[int, ...],
    beyond_distances: tuple[int, ...],
) -> AttentionStatistics:
    """Sum per-query values (B, H, C[, X]) over the counted queries (B, C)."""
    weight = counted[:, None, :].double()
    keys = key_counts.double()
    log_keys = torch.log(keys.clamp(min=1))
    normalizable = counted & (key_counts > 1)
    normalized = torch.where(
        normalizable[:, None, :], entropy.double() / log_keys[:, None, :].clamp(min=1e-12), 0.0
    )
    return AttentionStatistics(
        distance_edges=distance_edges,
        beyond_distances=beyond_distances,
        queries=int(counted.sum()),
        normalizable_queries=int(normalizable.sum()),
        distance_mass_sum=(bin_mass.double() * weight[..., None]).sum((0, 2)).cpu(),
        distance_sum=(distance.double() * weight).sum((0, 2)).cpu(),
        uniform_distance_sum=float((((keys - 1) / 2) * counted).sum()),
        entropy_sum=(entropy.double() * weight).sum((0, 2)).cpu(),
        normalized_entropy_sum=normalized.sum((0, 2)).cpu(),
        beyond_mass_sum=(beyond.double() * weight[..., None]).sum((0, 2)).cpu(),
    )


def _per_query_from_probs(
    probs: Tensor,
    scores: Tensor,
    log_norm: Tensor,
    distance: Tensor,
    distance_edges: tuple[int, ...],
    beyond_distances: tuple[int, ...],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bin masses, mean distance, entropy and masses beyond, from explicit probabilities.

    probs/scores (B, H, C, S) with masked scores set to 0; distance (C, S).
    """
    bins = torch.bucketize(
        distance, torch.tensor(distance_edges, device=distance.device), right=True
    )
    bins = (bins - 1).clamp(min=0)  # negative distances (future keys) carry no mass
    bin_mass = probs.new_zeros((*probs.shape[:-1], len(distance_edges)))
    bin_mass.scatter_add_(-1, bins.expand_as(probs), probs)
    mean_distance = (probs * distance.to(probs.dtype)).sum(-1)
    entropy = log_norm - (probs * scores).sum(-1)
    beyond = probs.new_zeros((*probs.shape[:-1], len(beyond_distances)))
    for column, limit in enumerate(beyond_distances):
        beyond[..., column] = (probs * (distance > limit)).sum(-1)
    return bin_mass, mean_distance, entropy, beyond


def _key_counts(
    length: int, window: int | None, doc_ids: Tensor | None, batch: int, device: torch.device
) -> Tensor:
    """Visible keys per query (B, T): tokens since the document's start, capped by window."""
    positions = torch.arange(length, device=device).expand(batch, length)
    if doc_ids is None:
        starts = torch.zeros_like(positions)
    else:
        boundary = torch.ones_like(doc_ids, dtype=torch.bool)
        boundary[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        starts = torch.where(boundary, positions, 0).cummax(dim=1).values
    counts = positions - starts + 1
    return counts.clamp(max=window) if window is not None else counts


def _counted_queries(
    query_mask: Tensor | None, batch: int, length: int, device: torch.device
) -> Tensor:
    """(B, T) bool: the queries whose statistics count (all, without a mask)."""
    if query_mask is not None:
        return query_mask.bool()
    return torch.ones((batch, length), dtype=torch.bool, device=device)


def attention_statistics_reference(
    q: Tensor,
    k: Tensor,
    *,
    distance_edges: Sequence[int] = DEFAULT_DISTANCE_EDGES,
    beyond_distances: Sequence[int] = DEFAULT_BEYOND_DISTANCES,
    window: int | None = None,
    doc_ids: Tensor | None = None,
    query_mask: Tensor | None = None,
    scale: float | None = None,
) -> AttentionStatistics:
    """Every statistic from the materialised softmax (B, H, T, T), bin by bin."""
    _check_statistics_arguments(q, k, window, doc_ids, query_mask, distance_edges, beyond_distances)
    edges, beyond_at = tuple(distance_edges), tuple(beyond_distances)
    batch, _, length, width = q.shape
    scale = scale if scale is not None else 1.0 / math.sqrt(width)
    mask = windowed_causal_mask(length, window, doc_ids, q.device)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    positions = torch.arange(length, device=q.device)
    distance = (positions[:, None] - positions[None, :]).float()
    bounds = [*edges, math.inf]
    bin_mass = torch.stack(
        [
            (probs * ((distance >= lo) & (distance < hi))).sum(-1)
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ],
        dim=-1,
    )
    log_probs = torch.where(mask, probs.clamp(min=1e-45).log(), 0.0)
    entropy = -(probs * log_probs).sum(-1)
    beyond = (
        torch.stack([(probs * (distance > d)).sum(-1) for d in beyond_at], dim=-1)
        if beyond_at
        else probs.new_zeros((*probs.shape[:-1], 0))
    )
    key_counts = mask.sum(-1)[:, 0].expand(batch, length)
    counted = _counted_queries(query_mask, batch, length, q.device)
    return _summarise(
        bin_mass, (probs * distance).sum(-1), entropy, beyond, key_counts, counted, edges, beyond_at
    )


def attention_statistics_chunked(
    q: Tensor,
    k: Tensor,
    *,
    distance_edges: Sequence[int] = DEFAULT_DISTANCE_EDGES,
    beyond_distances: Sequence[int] = DEFAULT_BEYOND_DISTANCES,
    window: int | None = None,
    doc_ids: Tensor | None = None,
    query_mask: Tensor | None = None,
    scale: float | None = None,
    chunk_queries: int | None = None,
    progress: Progress | None = None,
) -> AttentionStatistics:
    """The statistics `chunk_queries` queries at a time (default: ~4M scores a chunk).

    Each chunk scores only the keys it can see (causal, and within `window`), so with a
    window the work is O(T x (chunk + window)).
    """
    _check_statistics_arguments(q, k, window, doc_ids, query_mask, distance_edges, beyond_distances)
    edges, beyond_at = tuple(distance_edges), tuple(beyond_distances)
    batch, heads, length, width = q.shape
    scale = scale if scale is not None else 1.0 / math.sqrt(width)
    chunk = chunk_queries or max(1, (1 << 22) // max(1, batch * heads * length))
    key_counts = _key_counts(length, window, doc_ids, batch, q.device)
    counted = _counted_queries(query_mask, batch, length, q.device)
    tracker = ensure_progress(progress)
    tracker.start("attention statistics", total=length)
    total: AttentionStatistics | None = None
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        first_key = max(0, start - window + 1) if window is not None else 0
        scores = (
            q[:, :, start:stop].float() @ k[:, :, first_key:stop].float().transpose(-1, -2)
        ) * scale
        query_pos = torch.arange(start, stop, device=q.device)
        key_pos = torch.arange(first_key, stop, device=q.device)
        distance = query_pos[:, None] - key_pos[None, :]
        visible = distance >= 0
        if window is not None:
            visible = visible & (distance < window)
        visible = visible[None, None]
        if doc_ids is not None:
            same_doc = doc_ids[:, start:stop, None] == doc_ids[:, None, first_key:stop]
            visible = visible & same_doc[:, None]
        masked = scores.masked_fill(~visible, float("-inf"))
        log_norm = torch.logsumexp(masked, dim=-1)
        probs = torch.exp(masked - log_norm[..., None])
        per_query = _per_query_from_probs(
            probs, scores.masked_fill(~visible, 0.0), log_norm, distance, edges, beyond_at
        )
        part = _summarise(
            *per_query, key_counts[:, start:stop], counted[:, start:stop], edges, beyond_at
        )
        total = part if total is None else total.merge(part)
        tracker.advance(stop - start)
    tracker.finish()
    if total is None:  # no queries at all
        return _summarise(
            q.new_zeros((batch, heads, 0, len(edges))),
            q.new_zeros((batch, heads, 0)),
            q.new_zeros((batch, heads, 0)),
            q.new_zeros((batch, heads, 0, len(beyond_at))),
            key_counts,
            counted,
            edges,
            beyond_at,
        )
    return total


def _flex_output_and_lse(
    flex, q: Tensor, k: Tensor, v: Tensor, block_mask, scale: float
) -> tuple[Tensor, Tensor]:
    """FlexAttention's output and natural-log log-sum-exp, on old and new PyTorch."""
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # PyTorch before AuxRequest: the older keyword
        return flex(q, k, v, block_mask=block_mask, scale=scale, return_lse=True)
    out, aux = flex(q, k, v, block_mask=block_mask, scale=scale, return_aux=AuxRequest(lse=True))
    return out, aux.lse


def attention_statistics_flex(
    q: Tensor,
    k: Tensor,
    *,
    distance_edges: Sequence[int] = DEFAULT_DISTANCE_EDGES,
    beyond_distances: Sequence[int] = DEFAULT_BEYOND_DISTANCES,
    window: int | None = None,
    doc_ids: Tensor | None = None,
    query_mask: Tensor | None = None,
    scale: float | None = None,
    compiled: bool = True,
) -> AttentionStatistics:
    """The statistics from log-sum-exps and value channels; no score matrix is formed.

    One pass per distinct window (bin edges, beyond distances + 1) plus two full passes.
    `compiled=False` runs eager FlexAttention (which does build the scores): only for
    checking this path's arithmetic on CPU.
    """
    _check_statistics_arguments(q, k, window, doc_ids, query_mask, distance_edges, beyond_distances)
    edges, beyond_at = tuple(distance_edges), tuple(beyond_distances)
    batch, heads, length, width = q.shape
    scale = scale if scale is not None else 1.0 / math.sqrt(width)
    flex = flex_attention_call(compiled)
    q32, k32 = q.float(), k.float()
    full_mask = windowed_block_mask(batch, length, window, doc_ids, q.device)
    mean_key, log_norm = _flex_output_and_lse(flex, q32, k32, k32, full_mask, scale)
    positions = torch.arange(length, device=q.device, dtype=torch.float32)
    position_values = positions[None, None, :, None].expand(batch, heads, length, width)
    mean_position, _ = _flex_output_and_lse(
        flex, q32, k32, position_values.contiguous(), full_mask, scale
    )
    entropy = log_norm - scale * (q32 * mean_key).sum(-1)
    mean_distance = positions - mean_position[..., 0]

    within_cache: dict[int, Tensor] = {}

    def within(distance_limit: int) -> Tensor:
        """Mass on keys at distance < distance_limit, per query (B, H, T)."""
        if distance_limit <= 0:
            return torch.zeros_like(log_norm)
        if distance_limit >= length or (window is not None and distance_limit >= window):
            return torch.ones_like(log_norm)
        if distance_limit not in within_cache:
            block_mask = windowed_block_mask(batch, length, distance_limit, doc_ids, q.device)
            _, window_norm = _flex_output_and_lse(flex, q32, k32, k32, block_mask, scale)
            within_cache[distance_limit] = torch.exp(window_norm - log_norm).clamp(max=1.0)
        return within_cache[distance_limit]

    upper = [*edges[1:], None]
    bin_mass = torch.stack(
        [
            (within(hi) if hi is not None else torch.ones_like(log_norm)) - within(lo)
            for lo, hi in zip(edges, upper, strict=True)
        ],
        dim=-1,
    )
    beyond = (
        torch.stack([1.0 - within(d + 1) for d in beyond_at], dim=-1)
        if beyond_at
        else log_norm.new_zeros((*log_norm.shape, 0))
    )
    key_counts = _key_counts(length, window, doc_ids, batch, q.device)
    counted = _counted_queries(query_mask, batch, length, q.device)
    return _summarise(
        bin_mass, mean_distance, entropy, beyond, key_counts, counted, edges, beyond_at
    )


def attention_statistics(
    q: Tensor,
    k: Tensor,
    *,
    distance_edges: Sequence[int] = DEFAULT_DISTANCE_EDGES,
    beyond_distances: Sequence[int] = DEFAULT_BEYOND_DISTANCES,
    window: int | None = None,
    doc_ids: Tensor | None = None,
    query_mask: Tensor | None = None,
    scale: float | None = None,
    impl: str = "auto",
    chunk_queries: int | None = None,
    progress: Progress | None = None,
) -> AttentionStatistics:
    """Per-head attention statistics of one layer: the dispatcher (see the module doc).

    q, k (B, H, T, d) as the layer computes them (after rotary embeddings); `window` is
    the layer's own attention span, `doc_ids` (B, T) its document layout, `query_mask`
    (B, T) the queries that count (False for BOS and padding). Auto uses FlexAttention
    on CUDA and the chunked path elsewhere.
    """
    chosen = choose_impl(
        "attention_statistics",
        impl,
        IMPLEMENTATIONS,
        q.device,
        ("flex", "chunked"),
        head_dim=q.shape[-1],
    )
    common = dict(
        distance_edges=distance_edges,
        beyond_distances=beyond_distances,
        window=window,
        doc_ids=doc_ids,
        query_mask=query_mask,
        scale=scale,
    )
    if chosen == "reference":
        return attention_statistics_reference(q, k, **common)
    if chosen == "flex":
        return attention_statistics_flex(q, k, **common)
    return attention_statistics_chunked(
        q, k, **common, chunk_queries=chunk_queries, progress=progress
    )
