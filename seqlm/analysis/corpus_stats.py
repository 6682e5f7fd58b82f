"""Streaming attention statistics over a corpus split, by token distance and elapsed time.

For each layer and head, over the data queries of the chosen sequences:

- by token distance i - j (the `attention_statistics` kernel): attention mass per
  distance bin, mean distance beside the uniform-attention baseline, entropy (nats, and
  normalised by log of the number of visible keys), mass beyond distance k;
- by elapsed time t_i - t_j in seconds, when the corpus has `times.bin`: mass per
  log-spaced time bin, mean elapsed time beside the uniform baseline, mass beyond
  chosen durations;
- the sink mass: what the model put on the excluded keys (in practice [BOS]).

Query-row filters (`query_tokens`, `query_targets`): only data queries whose own token,
and/or whose next token (the target the row predicts), is one of the given tokens are
counted; every key stays visible to them. A sparse dependency (256 planted query rows
among 125,607) is lost in a whole-split average and shows when only its rows count.
`counted_queries` says how many rows every figure then averages over.

What is excluded, exactly (also written into the output, `EXCLUSION_NOTE`): tokens
[PAD], [BOS] and [EOS] are neither counted queries nor keys. Each data query's
attention is renormalised over the data keys it may see (causal, within the layer's
span, within its own sequence window), so a head that parks its mass on [BOS] does not
look long-range; that parked mass is reported as `sink_mass` instead. Sequences never
see each other (one sequence per row, right-padded; padding comes after every data
token). Sequences longer than the model's context are cut into consecutive windows
(`sequence_windows`), each analysed from position 0 as in training.

Streaming: one batch of windows is captured at a time (q and k per layer), and the
weights are formed a chunk of queries at a time, so memory never holds more than
(rows, heads, chunk, T) scores of one layer. All results are sums with counts, so the
order of batches does not change them beyond float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from seqlm.analysis.attention_capture import (
    AttentionInputs,
    capture_attention_inputs,
    check_model_fits_corpus,
    sequence_windows,
)
from seqlm.analysis.elapsed_pass import (
    ElapsedTimeSums,
    as_numpy,
    sink_and_time_pass,
)
from seqlm.analysis.stats_bins import distance_bin_edges, time_bin_edges
from seqlm.errors import ConfigError, CorpusError
from seqlm.kernels.attention_stats import AttentionStatistics, attention_statistics
from seqlm.model import GPT
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies import BOS_ID, EOS_ID, PAD_ID

EXCLUDED_TOKEN_IDS: tuple[int, ...] = (PAD_ID, BOS_ID, EOS_ID)
# Scores per query chunk by default: 1M (4 MB in fp32). The chunked kernel keeps several
# chunk-sized temporaries; at 4M its peak at T = 2,048 was ~200 MB above this setting's
# for ~10% less time (benchmarks/bench_attention.py).
STATS_CHUNK_SCORES = 1 << 20
EXCLUSION_NOTE = (
    "Queries and keys at [PAD], [BOS] and [EOS] are excluded: those queries are not "
    "counted, and each data query's attention is renormalised over the data keys it may "
    "see (causal, within the layer's span, within its own sequence window). The mass the "
    "model put on excluded keys (in practice [BOS], an attention sink) is sink_mass. "
    "Sequences longer than the context are cut into consecutive windows analysed from "
    "position 0; sequences never attend to each other."
)


@dataclass
class AttentionStatsOptions:
    """What `corpus_attention_statistics` looks at and how it bins.

    `max_sequences` None = every sequence of the split; fewer are taken evenly spaced
    over the split (so every bird or cohort is represented, and the choice is fixed).
    `distance_edges` None = `distance_bin_edges(context)`; `time_edges` None = from the
    corpus's times (`time_bin_edges` of the shortest positive gap's 1st percentile and
    the longest window). `batch_tokens` bounds padded tokens per forward;
    `chunk_queries` None = about `STATS_CHUNK_SCORES` scores per chunk.
    `query_tokens` / `query_targets` (token strings; empty = no filter) count only the
    data queries whose token / next token is one of them (both given: both must hold).
    """

    split: str = "held_out"
    max_sequences: int | None = None
    layers: tuple[int, ...] | None = None
    distance_edges: tuple[int, ...] | None = None
    beyond_distances: tuple[int, ...] = (8, 32, 128)
    use_times: bool = True
    time_edges: tuple[float, ...] | None = None
    beyond_seconds: tuple[float, ...] = ()
    batch_tokens: int = 16384
    chunk_queries: int | None = None
    impl: str = "auto"
    query_tokens: tuple[str, ...] = ()
    query_targets: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.query_tokens or self.query_targets)

    def describe_filter(self) -> str:
        """The query-row filter in words ("" when none): for captions and tables."""
        parts = []
        if self.query_tokens:
            parts.append("token in {" + ",".join(self.query_tokens) + "}")
        if self.query_targets:
            parts.append("next token in {" + ",".join(self.query_targets) + "}")
        return " and ".join(parts)

    def __post_init__(self) -> None:
        if self.max_sequences is not None and self.max_sequences < 1:
            raise ConfigError(f"max_sequences must be at least 1, got {self.max_sequences}")
        if self.batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be at least 1, got {self.batch_tokens}")
        if self.time_edges is not None:
            edges = list(self.time_edges)
            if (
                not edges
                or edges[0] != 0
                or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
            ):
                raise ConfigError(f"time_edges must start at 0 and increase, not {edges}")
        if any(not s >= 0 for s in self.beyond_seconds):
            raise ConfigError("beyond_seconds must be >= 0")
        if self.distance_edges is not None:
            edges = list(self.distance_edges)
            if (
                not edges
                or edges[0] != 0
                or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
            ):
                raise ConfigError(f"distance edges must start at 0 and increase, not {edges}")


@dataclass
class LayerSums:
    """Everything accumulated for one layer."""

    distance: AttentionStatistics | None
    sink_mass_sum: np.ndarray  # (H,)
    uniform_distance_mass_sum: np.ndarray  # (distance bins,)
    time: ElapsedTimeSums | None


@dataclass
class CorpusAttentionStatistics:
    """The result: per-layer sums, the bins, and what was read. Tables in `stats_tables`."""

    options: AttentionStatsOptions
    context: int
    n_heads: int
    distance_edges: tuple[int, ...]
    time_edges: tuple[float, ...] | None
    layers: dict[int, LayerSums]
    sequences: int = 0
    windows: int = 0
    queries: int = 0  # data queries seen
    counted_queries: int = 0  # those the figures average over (all, unless filtered)
    seq_ids: list[int] = field(default_factory=list)
    # What the corpus's times count: "s" or "index" (unitless); labels follow it.
    time_unit: str = "s"

    @property
    def has_times(self) -> bool:
        return self.time_edges is not None

    def rows_note(self) -> str:
        """Which query rows the figures average over, in words (for captions, tables)."""
        if not self.options.filtered:
            return f"all {self.queries:,} data query rows"
        return (
            f"only {self.counted_queries:,} of {self.queries:,} data query rows "
            f"({self.options.describe_filter()})"
        )


def select_sequences(corpus, split: str, max_sequences: int | None) -> list[int]:
    """Sequence ids of `split`; at most `max_sequences`, evenly spaced over the split."""
    ids = corpus.split(split)["seq_id"].to_numpy()
    if len(ids) == 0:
        raise CorpusError(f"{corpus.path}: the {split} split has no sequences")
    if max_sequences is not None and max_sequences < len(ids):
        picks = np.unique(np.linspace(0, len(ids) - 1, max_sequences).round().astype(np.int64))
        ids = ids[picks]
    return [int(i) for i in ids]


def corpus_windows(corpus, seq_ids: list[int], context: int) -> list[tuple[int, int, int]]:
    """(seq_id, start, stop) of every window the statistics look at."""
    lengths = corpus.index["length"].to_numpy()
    return [
        (seq_id, start, stop)
        for seq_id in seq_ids
        for start, stop in sequence_windows(int(lengths[seq_id]), context)
    ]


def _batches(
    windows: list[tuple[int, int, int]], batch_tokens: int
) -> list[list[tuple[int, int, int]]]:
    """Windows longest first, grouped so rows x longest row <= batch_tokens (padding stays
    small because neighbours have similar lengths)."""
    ordered = sorted(windows, key=lambda w: (-(w[2] - w[1]), w[0], w[1]))
    batches: list[list[tuple[int, int, int]]] = []
    for window in ordered:
        longest = batches[-1][0][2] - batches[-1][0][1] if batches else 0
        if batches and (len(batches[-1]) + 1) * longest <= batch_tokens:
            batches[-1].append(window)
        else:
            batches.append([window])
    return batches


def data_time_edges(corpus, windows: list[tuple[int, int, int]]) -> tuple[float, ...]:
    """Log-spaced edges from the data (`time_bin_edges` of the 1st percentile of the
    positive gaps between tokens and the longest window's duration)."""
    gaps, longest = [], 0.0
    for seq_id, start, stop in windows:
        times = np.asarray(corpus.sequence_times(seq_id)[start:stop], dtype=np.float64)
        if len(times) > 1:
            steps = np.diff(times)
            gaps.append(steps[steps > 0])
            longest = max(longest, float(times[-1] - times[0]))
    positive = np.concatenate(gaps) if gaps else np.zeros(0)
    if len(positive) == 0:
        return (0.0,)  # every token at the same time: one bin, [0, inf)
    shortest = float(np.quantile(positive, 0.01))
    return time_bin_edges(shortest, max(longest, float(positive.max())), corpus.time_unit)


def _special_runs(data: Tensor) -> Tensor:
    """doc_ids (B, T) giving every excluded token its own run and the data tokens between
    them one run: the kernel then renormalises each data query over data keys only."""
    boundary = torch.ones_like(data)
    boundary[:, 1:] = (~data[:, 1:]) | (~data[:, :-1])
    return boundary.long().cumsum(1)


def _merge_time(total: ElapsedTimeSums | None, part: ElapsedTimeSums | None):
    if total is None:
        return part
    total.mass_sum += part.mass_sum
    total.elapsed_sum += part.elapsed_sum
    total.beyond_sum += part.beyond_sum
    total.uniform_mass_sum += part.uniform_mass_sum
    total.uniform_elapsed_sum += part.uniform_elapsed_sum
    return total


def _uniform_bin_mass(counts: Tensor, edges: Sequence[int]) -> Tensor:
    """Mass per distance bin of uniform attention over n = `counts` keys at distances
    0..n-1 (the data keys a query sees are contiguous): (B, C) -> (B, C, bins)."""
    lo = torch.tensor(list(edges), dtype=torch.float64, device=counts.device)
    hi = torch.tensor([*list(edges)[1:], math.inf], dtype=torch.float64, device=counts.device)
    n = counts.double()[..., None]
    inside = (torch.minimum(hi, n) - lo).clamp(min=0)
    return inside / n.clamp(min=1)


def accumulate_batch(
    stats: CorpusAttentionStatistics,
    inputs: AttentionInputs,
    times: Tensor | None,
    query_rows: Tensor | None = None,
) -> None:
    """Add one captured batch (rows of single sequences, right-padded with [PAD]) to
    `stats`. Public so that other analyses can feed batches they captured themselves.
    `query_rows` (B, T) bool, when given, limits the counted queries to those rows (keys
    are every data token all the same)."""
    options = stats.options
    tokens = inputs.tokens.cpu()
    data = ~torch.isin(tokens, torch.tensor(EXCLUDED_TOKEN_IDS))
    runs = _special_runs(data)
    counted = data if query_rows is None else data & query_rows.cpu()
    layers = list(stats.layers)
    rows, length = tokens.shape
    chunk = options.chunk_queries or max(1, STATS_CHUNK_SCORES // (rows * inputs.n_heads * length))
    for layer in layers:
        captured = inputs.layers[layer]
        distance = attention_statistics(
            captured.q,
            captured.k,
            distance_edges=stats.distance_edges,
            beyond_distances=options.beyond_distances,
            window=inputs.spans[layer],
            doc_ids=runs.to(captured.q.device),
            query_mask=counted.to(captured.q.device),
            scale=captured.scale,
            impl=options.impl,
            chunk_queries=chunk,
        )
        sums = stats.layers[layer]
        sums.distance = distance if sums.distance is None else sums.distance.merge(distance)
    sinks, key_counts, time_parts = sink_and_time_pass(
        inputs, layers, data, times, stats.time_edges, options.beyond_seconds, chunk, counted
    )  # fmt: skip
    for layer in layers:
        sums = stats.layers[layer]
        sums.sink_mass_sum += sinks[layer]
        uniform = _uniform_bin_mass(key_counts[layer].cpu(), stats.distance_edges)
        sums.uniform_distance_mass_sum += as_numpy((uniform * counted[..., None]).sum((0, 1)))
        sums.time = _merge_time(sums.time, time_parts[layer])
    stats.queries += int(data.sum())
    stats.counted_queries += int(counted.sum())


def _token_ids(corpus, names: tuple[str, ...], option: str) -> np.ndarray | None:
    """Vocabulary ids of token strings (None when no filter); unknown: one clear error."""
    if not names:
        return None
    ids = corpus.vocabulary.token_to_id
    unknown = [name for name in names if name not in ids]
    if unknown:
        raise ConfigError(
            f"{option}: {', '.join(repr(n) for n in unknown)} not in the corpus's vocabulary "
            f"({corpus.vocab_size} tokens, e.g. {', '.join(corpus.vocabulary.tokens[5:9])})"
        )
    return np.array(sorted({ids[name] for name in names}), dtype=np.int64)


def _query_rows(sequence: np.ndarray, start: int, stop: int, filters) -> np.ndarray:
    """Which positions start..stop-1 of `sequence` pass the query-row filters: their token
    is in `filters[0]` and their next token (the target) in `filters[1]` (None = any)."""
    tokens, targets = filters
    rows = np.ones(stop - start, dtype=bool)
    if tokens is not None:
        rows &= np.isin(sequence[start:stop], tokens)
    if targets is not None:
        following = np.full(stop - start, PAD_ID, dtype=np.int64)
        after = sequence[start + 1 : stop + 1]
        following[: len(after)] = after
        rows &= np.isin(following, targets)
    return rows


def _check_filters(corpus, windows, filters, options: AttentionStatsOptions) -> None:
    """Refuse a filter that no data query of the chosen windows passes."""
    if all(f is None for f in filters):
        return
    excluded = np.array(EXCLUDED_TOKEN_IDS)
    for seq_id, start, stop in windows:
        sequence = np.asarray(corpus.sequence(seq_id), dtype=np.int64)
        rows = _query_rows(sequence, start, stop, filters)
        if (rows & ~np.isin(sequence[start:stop], excluded)).any():
            return
    raise ConfigError(
        f"no data query of the {options.split} split has {options.describe_filter()}: "
        "nothing to count"
    )


def _check_distance_edges(edges: tuple[int, ...], context: int) -> None:
    if edges[-1] >= context:
        raise ConfigError(
            f"distance edge {edges[-1]} is not below the model's context {context}: "
            "no query sees a key that far back"
        )


def corpus_attention_statistics(
    model: GPT,
    corpus,
    options: AttentionStatsOptions | None = None,
    *,
    progress: Progress | None = None,
) -> CorpusAttentionStatistics:
    """Stream the attention statistics of `model` over a split of `corpus` (see module doc).

    `corpus` is a loaded `seqlm.corpus.Corpus` whose vocabulary the model was trained on.
    """
    options = options or AttentionStatsOptions()
    check_model_fits_corpus(model, corpus)
    n_layer, context = model.config.n_layer, model.config.block_size
    layers = tuple(range(n_layer)) if options.layers is None else tuple(sorted(set(options.layers)))
    if not layers or any(not 0 <= layer < n_layer for layer in layers):
        raise ConfigError(f"layers {list(layers)} must be in 0..{n_layer - 1}")
    seq_ids = select_sequences(corpus, options.split, options.max_sequences)
    windows = corpus_windows(corpus, seq_ids, context)
    distance_edges = options.distance_edges or distance_bin_edges(context)
    _check_distance_edges(tuple(distance_edges), context)
    filters = (
        _token_ids(corpus, options.query_tokens, "--queries"),
        _token_ids(corpus, options.query_targets, "--query-targets"),
    )
    _check_filters(corpus, windows, filters, options)
    filtered = any(f is not None for f in filters)
    use_times = options.use_times and corpus.times is not None
    time_edges = None
    if use_times:
        time_edges = options.time_edges or data_time_edges(corpus, windows)
    n_bins = len(distance_edges)
    stats = CorpusAttentionStatistics(
        options=options,
        context=context,
        n_heads=model.config.n_head,
        distance_edges=tuple(distance_edges),
        time_edges=None if time_edges is None else tuple(float(e) for e in time_edges),
        layers={
            layer: LayerSums(None, np.zeros(model.config.n_head), np.zeros(n_bins), None)
            for layer in layers
        },
        sequences=len(seq_ids),
        windows=len(windows),
        seq_ids=seq_ids,
        time_unit=corpus.time_unit,
    )
    tracker = ensure_progress(progress)
    tracker.start(f"attention statistics ({options.split})", total=len(windows))
    for batch in _batches(windows, options.batch_tokens):
        width = batch[0][2] - batch[0][1]
        tokens = np.full((len(batch), width), PAD_ID, dtype=np.int64)
        times = np.zeros((len(batch), width), dtype=np.float64) if use_times else None
        rows = np.zeros((len(batch), width), dtype=bool) if filtered else None
        for row, (seq_id, start, stop) in enumerate(batch):
            sequence = np.asarray(corpus.sequence(seq_id), dtype=np.int64)
            tokens[row, : stop - start] = sequence[start:stop]
            if times is not None:
                times[row, : stop - start] = corpus.sequence_times(seq_id)[start:stop]
            if rows is not None:
                rows[row, : stop - start] = _query_rows(sequence, start, stop, filters)
        inputs = capture_attention_inputs(model, tokens, layers=layers)
        accumulate_batch(
            stats,
            inputs,
            None if times is None else torch.from_numpy(times),
            None if rows is None else torch.from_numpy(rows),
        )
        tracker.advance(len(batch))
    tracker.finish()
    return stats
