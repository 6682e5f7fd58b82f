"""Getting attention weights out of a trained GPT, for analysis only.

Training never pays for this: it keeps the fused SDPA call and materialises no weights.
Here one forward runs under `capture_attention(model, layers)`, forward pre-hooks on
the chosen layers' attention modules that store each layer's q and k after rotary (and
v, recomputed from the layer's input with the module's own `project`) and the boolean
mask that layer used (causal, its attention span, document boundaries); the model holds
no capture code. An ALiBi model's bias is folded into q and k as one more channel
(`fold_alibi`), so the weights recomputed from them are the model's. The weights are then recomputed eagerly from
those inputs with `seqlm.model.attention_weights`, a chunk of queries at a time, so a
4,096-token sequence never needs T x T x heads x layers at once: a chunk holds
(rows, chosen heads, chunk, T) floats of one layer.

This is the API the other analyses build on (span experiments, head importance,
probes): `capture_attention_inputs` for a batch of token rows, `AttentionInputs.chunks`
to stream weights, `AttentionInputs.weights` for the full maps of a few heads, and
`corpus_window` / `sequence_windows` to cut corpus sequences to the model's context.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seqlm.errors import ConfigError, CorpusError
from seqlm.model import GPT, attention_weights, causal_mask
from seqlm.training.checkpoint import BEST_DIR, WEIGHTS_FILE
from seqlm.training.runs import load_trained_model

# Scores held per chunk when the caller gives no chunk size: 4M floats (16 MB in fp32).
DEFAULT_CHUNK_SCORES = 1 << 22


def default_chunk_queries(rows: int, heads: int, length: int) -> int:
    """Queries per chunk so one chunk holds about `DEFAULT_CHUNK_SCORES` weights."""
    return max(1, DEFAULT_CHUNK_SCORES // max(1, rows * heads * length))


@dataclass
class CapturedAttention:
    """What one attention layer used in one forward: enough to recompute its weights.

    q, k, v: (B, H, T, d) after rotary, detached; with ALiBi q and k have d + 1
    channels, the last one the bias (`fold_alibi`). mask: boolean, broadcastable to
    (B, H, T, T), True = may attend (always explicit here, also when the layer ran with
    is_causal or ALiBi's float mask). scale: the softmax scale (1 / sqrt(d)).
    """

    layer: int
    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor
    scale: float


def fold_alibi(q: Tensor, k: Tensor, slopes: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """q, k (B, H, T, d) with one more channel that carries ALiBi's bias: q gets 1, key j
    of head h gets m_h * j / scale, so scale * q'.k' = scale * q.k + m_h * j.

    The model adds -m_h * (i - j); the -m_h * i part is the same for every key of query
    i and cancels in the softmax, so the weights from q', k' and the boolean mask are
    the model's weights, and every analysis that scores q.k itself (attention stats,
    elapsed time) sees them without knowing about ALiBi.
    """
    batch, heads, length, _ = k.shape
    keys = torch.arange(length, device=k.device, dtype=torch.float32)
    extra_k = (slopes.to(k.device)[:, None] * keys[None, :] / scale).to(k.dtype)
    extra_k = extra_k[None, :, :, None].expand(batch, heads, length, 1)
    extra_q = torch.ones((*q.shape[:-1], 1), dtype=q.dtype, device=q.device)
    return torch.cat([q, extra_q], dim=-1), torch.cat([k, extra_k], dim=-1)


def _capture_hook(layer: int, records: list[CapturedAttention], slopes: Tensor | None):
    """A forward pre-hook on a `CausalSelfAttention` appending what the call uses
    (`slopes`: the model's ALiBi slopes, folded into q and k; None otherwise)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        call = inspect.signature(module.forward).bind(*args, **kwargs)
        call.apply_defaults()
        x, rotary, mask = call.arguments["x"], call.arguments["rotary"], call.arguments["mask"]
        with torch.no_grad():
            q, k, v = module.project(x, rotary)
        scale = 1.0 / math.sqrt(module.head_dim)
        if mask is None:
            mask = causal_mask(x.shape[1], device=q.device)
        elif mask.dtype.is_floating_point:  # ALiBi's float mask: bias and -inf
            if slopes is None:
                raise ConfigError("a float attention mask needs the model's ALiBi slopes")
            mask = torch.isfinite(mask[:, :1])
            q, k = fold_alibi(q, k, slopes, scale)
        records.append(
            CapturedAttention(
                layer=layer,
                q=q.detach(),
                k=k.detach(),
                v=v.detach(),
                mask=mask,
                scale=scale,
            )
        )

    return hook


@contextmanager
def capture_attention(
    model: GPT, layers: Iterable[int] | None = None
) -> Iterator[dict[int, list[CapturedAttention]]]:
    """Within the block, every forward appends each chosen layer's q, k, v and mask.

    Yields {layer: [CapturedAttention per forward]}. The hooks are removed on exit, so
    training never pays for them.
    """
    blocks = model.blocks
    chosen = list(range(len(blocks))) if layers is None else list(layers)
    for layer in chosen:
        if not 0 <= layer < len(blocks):
            raise ConfigError(f"no layer {layer}; the model has {len(blocks)}")
    records: dict[int, list[CapturedAttention]] = {layer: [] for layer in chosen}
    handles = [
        blocks[layer].attn.register_forward_pre_hook(
            _capture_hook(layer, records[layer], getattr(model, "alibi_slopes", None)),
            with_kwargs=True,
        )
        for layer in chosen
    ]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class AttentionChunk:
    """Weights of some heads of one layer for queries [query_start, query_stop).

    `weights` is (rows, len(heads), query_stop - query_start, T) float32; each query's
    weights over the keys it may see sum to 1 and are exactly 0 elsewhere.
    """

    layer: int
    heads: tuple[int, ...]
    query_start: int
    query_stop: int
    weights: Tensor


@dataclass
class AttentionInputs:
    """Per-layer attention inputs of one forward over `tokens` (rows, T).

    `layers` maps a layer index to what it used (`CapturedAttention`: q, k, v after
    rotary, (rows, H, T, d), the boolean mask and the softmax scale); `spans` gives each
    captured layer's attention span (None = full causal).
    """

    tokens: Tensor
    layers: dict[int, CapturedAttention]
    spans: dict[int, int | None]

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_heads(self) -> int:
        return int(next(iter(self.layers.values())).q.shape[1])

    def _captured(self, layer: int) -> CapturedAttention:
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} was not captured; captured: {sorted(self.layers)}")
        return self.layers[layer]

    def _heads(self, heads: Sequence[int] | None) -> tuple[int, ...]:
        chosen = tuple(range(self.n_heads)) if heads is None else tuple(int(h) for h in heads)
        bad = [h for h in chosen if not 0 <= h < self.n_heads]
        if bad or not chosen:
            raise ConfigError(f"heads {list(chosen)} must be in 0..{self.n_heads - 1}")
        return chosen

    def visible(self, layer: int, row: int = 0) -> Tensor:
        """(T, T) bool: which keys each query of `row` may see in this layer."""
        mask = self._captured(layer).mask
        mask = mask[row if mask.shape[0] > 1 else 0, 0]
        return mask.expand(self.length, self.length)

    def chunks(
        self,
        layer: int,
        heads: Sequence[int] | None = None,
        *,
        rows: Sequence[int] | None = None,
        chunk_queries: int | None = None,
    ) -> Iterator[AttentionChunk]:
        """The layer's weights, `chunk_queries` queries at a time (default ~4M weights)."""
        captured = self._captured(layer)
        chosen = self._heads(heads)
        head_index = torch.tensor(chosen, device=captured.q.device)
        q, k, mask = captured.q, captured.k, captured.mask
        if rows is not None:
            row_index = torch.tensor(list(rows), device=q.device)
            q, k = q[row_index], k[row_index]
            mask = mask[row_index] if mask.shape[0] > 1 else mask
        q, k = q[:, head_index].float(), k[:, head_index].float()
        step = chunk_queries or default_chunk_queries(q.shape[0], len(chosen), self.length)
        if step < 1:
            raise ConfigError(f"chunk_queries must be at least 1, got {step}")
        for start in range(0, self.length, step):
            stop = min(start + step, self.length)
            weights = attention_weights(
                q, k, mask, scale=captured.scale, query_start=start, query_stop=stop
            )
            yield AttentionChunk(layer, chosen, start, stop, weights)

    def weights(
        self,
        layer: int,
        heads: Sequence[int] | None = None,
        *,
        row: int = 0,
        chunk_queries: int | None = None,
    ) -> Tensor:
        """The full maps (len(heads), T, T) of the chosen heads of one row, built by chunks.

        Only the asked heads are ever materialised; ask for few heads on long sequences.
        """
        chosen = self._heads(heads)
        out = torch.empty(len(chosen), self.length, self.length)
        for chunk in self.chunks(layer, chosen, rows=[row], chunk_queries=chunk_queries):
            out[:, chunk.query_start : chunk.query_stop] = chunk.weights[0].cpu()
        return out

    def head_mean(self, layer: int, *, row: int = 0, chunk_queries: int | None = None) -> Tensor:
        """(T, T): the layer's weights averaged over its heads (what rollout uses)."""
        out = torch.empty(self.length, self.length)
        for chunk in self.chunks(layer, rows=[row], chunk_queries=chunk_queries):
            out[chunk.query_start : chunk.query_stop] = chunk.weights[0].mean(0).cpu()
        return out


def _as_rows(values: Tensor | np.ndarray | Sequence[int], name: str) -> Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values)
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2:
        raise ConfigError(
            f"{name} must be one row (T,) or rows (B, T), got shape {tuple(tensor.shape)}"
        )
    return tensor.long()


def capture_attention_inputs(
    model: GPT,
    tokens: Tensor | np.ndarray | Sequence[int],
    *,
    layers: Sequence[int] | None = None,
    doc_ids: Tensor | None = None,
    position_ids: Tensor | None = None,
) -> AttentionInputs:
    """Run `model` once over `tokens` (T,) or (B, T) and keep each chosen layer's inputs.

    The forward stops at the final hidden states (no logits), runs without gradients,
    and in eval mode (dropout off); the model's training flag is restored afterwards.
    The model's own attention spans apply (`set_attention_span` changes them).
    """
    rows = _as_rows(tokens, "tokens")
    if rows.shape[1] < 1:
        raise ConfigError("cannot capture attention of an empty sequence")
    device = next(model.parameters()).device
    rows = rows.to(device)
    chosen = list(range(model.config.n_layer)) if layers is None else sorted(set(layers))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_attention(model, chosen) as records:
            model.hidden_states(
                rows,
                doc_ids=None if doc_ids is None else doc_ids.to(device),
                position_ids=None if position_ids is None else position_ids.to(device),
            )
    finally:
        model.train(was_training)
    spans = model.attention_spans
    return AttentionInputs(
        tokens=rows,
        layers={layer: records[layer][0] for layer in chosen},
        spans={layer: spans[layer] for layer in chosen},
    )


def sequence_windows(length: int, context: int) -> list[tuple[int, int]]:
    """Consecutive windows [start, stop) of at most `context` tokens covering `length`.

    The model saw windows like these in training (a long sequence is cut into windows;
    only the first starts with [BOS]), so each is analysed on its own, from position 0.
    """
    if context < 1:
        raise ConfigError(f"context must be at least 1, got {context}")
    return [(start, min(start + context, length)) for start in range(0, length, context)]


@dataclass(frozen=True)
class CorpusWindow:
    """Tokens [start, stop) of corpus sequence `seq_id`, with labels and times."""

    seq_id: int
    start: int
    stop: int
    ids: np.ndarray
    labels: list[str]
    times: np.ndarray | None


def corpus_window(corpus, seq_id: int, context: int, start: int = 0) -> CorpusWindow:
    """The window of `seq_id` from token `start`, at most `context` tokens long.

    `corpus` is a `seqlm.corpus.Corpus`; labels are the vocabulary's token strings.
    """
    ids = np.asarray(corpus.sequence(seq_id))
    if not 0 <= start < len(ids):
        raise CorpusError(f"sequence {seq_id} has {len(ids)} tokens; no token {start}")
    stop = min(len(ids), start + context)
    window = ids[start:stop].astype(np.int64)
    times = None
    if corpus.times is not None:
        times = np.asarray(corpus.sequence_times(seq_id)[start:stop], dtype=np.float64)
    return CorpusWindow(seq_id, start, stop, window, corpus.vocabulary.decode(window), times)


def check_model_fits_corpus(model: GPT, corpus) -> None:
    """A `CorpusError` unless the corpus's token ids are the ones the model was trained on."""
    if model.config.vocab_size != corpus.vocab_size:
        raise CorpusError(
            f"{corpus.path}: vocabulary of {corpus.vocab_size} tokens, but the model has "
            f"{model.config.vocab_size}; analyse a run with the corpus it was trained on"
        )


def load_analysis_model(run_dir: str | Path, which: str = "auto", device: str = "cpu") -> GPT:
    """The run's GPT in eval mode: `which` is "latest", "best" (the lowest tuning loss),
    or "auto" (best when the run kept one, else latest)."""

    if which not in ("auto", "latest", "best"):
        raise ConfigError(f"which weights: 'auto', 'latest' or 'best', not {which!r}")
    if which == "auto":
        which = "best" if (Path(run_dir) / BEST_DIR / WEIGHTS_FILE).is_file() else "latest"
    model = load_trained_model(run_dir, which=which, device=device)
    if not isinstance(model, GPT):
        raise CorpusError(f"{run_dir}: attention analysis needs a GPT run")
    return model
