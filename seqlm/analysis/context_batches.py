"""Full-context and truncated readings of a corpus as batches, and their log-probabilities.

The batch machinery behind the context-length sweep (`seqlm.analysis.span`) and head
analysis: `context_batches` cuts each sequence into windows the model reads (the full
context by block-size windows, or every target from its last w tokens only),
`batch_log_probs` / `target_log_probs` score the kept predictions. Targets whose true id is
context only (conditioning tokens, `Vocabulary.condition_ids`) can be left out of the
kept predictions while staying in every window's input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor, nn

from seqlm.analysis.head_gates import gated_heads
from seqlm.errors import ConfigError
from seqlm.evaluation.scores import PredictionTargets
from seqlm.progress import Progress
from seqlm.vocabularies.scheme import PAD_ID


@dataclass(frozen=True)
class WindowBatch:
    """Rows of input ids and the (row, column) positions whose next-token predictions
    are kept; `target` indexes each kept prediction into the `PredictionTargets`."""

    inputs: Tensor  # (B, W) int64, right-padded with [PAD]
    rows: Tensor  # (N,) int64
    cols: Tensor  # (N,) int64
    true_ids: Tensor  # (N,) int64
    target: np.ndarray  # (N,) int64


# A window of the full-context reading: (sequence start in the flat tokens, first input,
# stop input, first input whose prediction is kept, target index of the sequence's input 0).
Window = tuple[int, int, int, int, int]


def _sequence_windows(targets: PredictionTargets, context: int, stride: int) -> list[Window]:
    """The windows of the full-context reading (see the module docstring)."""
    windows = []
    # Targets come in sequence order, so each sequence's are one run: its first target
    # gives where it starts, its last one where it ends.
    _, first, count = np.unique(targets.sequence, return_index=True, return_counts=True)
    begins = targets.sequence_start[first].tolist()
    ends = (targets.flat_index[first + count - 1] + 1).tolist()
    for begin, end, first_target in zip(begins, ends, first.tolist(), strict=True):
        inputs = end - begin - 1
        stop, new_from = min(context, inputs), 0
        while inputs > 0:
            windows.append((begin, max(0, stop - context), stop, new_from, first_target))
            if stop == inputs:
                break
            new_from, stop = stop, min(stop + stride, inputs)
    return windows


def context_batches(
    targets: PredictionTargets,
    *,
    context: int,
    truncation: int | None = None,
    stride: int | None = None,
    batch_tokens: int = 16384,
    device: torch.device | str = "cpu",
    context_only_ids: Sequence[int] | np.ndarray = (),
) -> Iterator[WindowBatch]:
    """Batches that predict every target once: from its full context (`truncation`
    None) or from exactly its last `truncation` tokens (targets whose prefix is that
    short are skipped: their full-context prediction is the truncated one). Targets
    whose true id is in `context_only_ids` are never kept (they stay in the inputs)."""
    if truncation is not None and not 1 <= truncation <= context:
        raise ConfigError(f"truncation must be in 1..{context} (the context), got {truncation}")
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= stride <= context:
        raise ConfigError(f"stride must be in 1..{context}, got {stride}")
    flat = targets.flat_tokens
    scored = ~np.isin(targets.token, np.asarray(context_only_ids, dtype=np.int64))
    if truncation is not None:
        chosen = np.flatnonzero((targets.position > truncation) & scored)
        if chosen.size == 0:  # every prefix is shorter than w (and flat may be too)
            return
        per_batch = max(1, batch_tokens // truncation)
        windows = sliding_window_view(flat, truncation)
        for low in range(0, chosen.size, per_batch):
            picked = chosen[low : low + per_batch]
            inputs = windows[targets.flat_index[picked] - truncation]
            n = picked.size
            yield WindowBatch(
                inputs=torch.as_tensor(np.ascontiguousarray(inputs), device=device),
                rows=torch.arange(n, device=device),
                cols=torch.full((n,), truncation - 1, device=device),
                true_ids=torch.as_tensor(targets.token[picked], device=device),
                target=picked,
            )
        return
    windows = _sequence_windows(targets, context, stride)
    order = sorted(range(len(windows)), key=lambda w: windows[w][1] - windows[w][2])
    batch: list[Window] = []
    for position, w in enumerate(order):
        batch.append(windows[w])
        width = batch[0][2] - batch[0][1]
        last = position == len(order) - 1
        if last or (len(batch) + 1) * width > batch_tokens:
            packed = _pack_windows(batch, width, flat, targets, scored, device)
            if packed.target.size:
                yield packed
            batch = []


def _pack_windows(
    batch: list[Window],
    width: int,
    flat: np.ndarray,
    targets: PredictionTargets,
    scored: np.ndarray,
    device: torch.device | str,
) -> WindowBatch:
    inputs = np.full((len(batch), width), PAD_ID, dtype=np.int64)
    rows, cols, picked = [], [], []
    for row, (begin, start, stop, new_from, first_target) in enumerate(batch):
        inputs[row, : stop - start] = flat[begin + start : begin + stop]
        new = np.arange(new_from, stop)
        rows.append(np.full(new.size, row))
        cols.append(new - start)
        picked.append(first_target + new)  # input i predicts the sequence's target i
    target = np.concatenate(picked)
    keep = scored[target]  # context-only targets are read, never predicted
    target = target[keep]
    return WindowBatch(
        inputs=torch.as_tensor(inputs, device=device),
        rows=torch.as_tensor(np.concatenate(rows)[keep], device=device),
        cols=torch.as_tensor(np.concatenate(cols)[keep], device=device),
        true_ids=torch.as_tensor(targets.token[target], device=device),
        target=target,
    )


def batch_log_probs(
    model: nn.Module,
    batch: WindowBatch,
    *,
    attention_span: object = "config",
    head_gates: Tensor | None = None,
) -> Tensor:
    """log p(true id) at the batch's kept positions (N,), differentiable (the caller
    chooses `torch.no_grad()` or not). The LM head runs on those positions only;
    `head_gates` attach as hooks (`seqlm.analysis.head_gates`) for this call."""
    with gated_heads(model, head_gates):
        hidden = model.hidden_states(batch.inputs, attention_span=attention_span)
    head = getattr(model, "head_logits", model.lm_head)  # GPT: part-shared rows too
    logits = head(hidden[batch.rows, batch.cols]).float()
    return torch.log_softmax(logits, dim=-1).gather(1, batch.true_ids[:, None])[:, 0]


@torch.no_grad()
def target_log_probs(
    model: nn.Module,
    targets: PredictionTargets,
    *,
    attention_span: object = "config",
    truncation: int | None = None,
    full: np.ndarray | None = None,
    stride: int | None = None,
    batch_tokens: int = 16384,
    progress: Progress | None = None,
) -> np.ndarray:
    """log p(true id) of every target, with full context (optionally a span) or truncated.

    With `truncation`, targets whose prefix is at most that long take their value from
    `full` (the full-context log-probabilities, computed here when not given).
    """
    was_training = model.training
    model.eval()
    try:
        if truncation is not None and full is None:
            full = target_log_probs(model, targets, stride=stride, batch_tokens=batch_tokens)
        out = np.full(len(targets), np.nan) if truncation is None else np.array(full, float)
        batches = context_batches(
            targets,
            context=int(model.config.block_size),
            truncation=truncation,
            stride=stride,
            batch_tokens=batch_tokens,
            device=next(model.parameters()).device,
        )
        for batch in batches:
            values = batch_log_probs(model, batch, attention_span=attention_span)
            out[batch.target] = values.double().cpu().numpy()
            if progress is not None:
                progress.advance(batch.target.size)
    finally:
        model.train(was_training)
    return out
