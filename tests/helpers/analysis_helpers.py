"""Helpers for the analysis tests: a dense attention reference written from scratch,
small corpora and run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from seqlm.model import GPT, GPTConfig


def random_gpt(seed: int = 0, **overrides) -> GPT:
    """A random GPT in eval mode; `init_std=0.5` gives peaked, uneven attention."""
    torch.manual_seed(seed)
    values = {
        "vocab_size": 40,
        "n_layer": 2,
        "n_head": 3,
        "n_embd": 24,
        "block_size": 32,
        "init_std": 0.5,
    }
    values.update(overrides)
    return GPT(GPTConfig(**values)).eval()


def _rotate(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """RoPE, half-split pairs (c, c + d/2) rotated by pos * base^(-2c/d): x (B, H, T, d)."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-np.arange(half) * 2.0 / x.shape[-1])
    angles = positions[:, None, :, None] * inv_freq  # (B, 1, T, d/2)
    cos, sin = np.cos(angles), np.sin(angles)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def _alibi_slopes(heads: int) -> np.ndarray:
    """ALiBi slopes as the paper's code gives them: 2^(-8h/n) for the power of two n <=
    heads, then every other slope of 2n."""
    n = 2 ** int(np.floor(np.log2(heads)))
    slopes = [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]
    slopes += [2.0 ** (-8.0 * h / (2 * n)) for h in range(1, 2 * n + 1, 2)][: heads - n]
    return np.array(slopes)


def reference_mask(length: int, span: int | None, doc_ids: np.ndarray | None, rows: int):
    """(B, T, T) bool from the rules, element by element: j <= i, i - j < span, same doc."""
    mask = np.zeros((rows, length, length), dtype=bool)
    for b in range(rows):
        for i in range(length):
            for j in range(i + 1):
                ok = span is None or i - j < span
                if doc_ids is not None:
                    ok = ok and doc_ids[b, i] == doc_ids[b, j]
                mask[b, i, j] = ok
    return mask


def dense_reference_attention(
    model: GPT,
    ids: torch.Tensor,
    doc_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Attention weights (B, H, T, T) float64 per layer and each layer's mask, computed
    densely from each attention module's input with numpy: own q/k projection split,
    own rotary (or ALiBi bias), own mask, own softmax. Nothing of seqlm's attention code is used."""
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        block.attn.register_forward_pre_hook(
            lambda module, args, i=i: inputs.__setitem__(i, args[0].detach())
        )
        for i, block in enumerate(model.blocks)
    ]
    try:
        with torch.no_grad():
            model(ids, doc_ids=doc_ids, position_ids=position_ids)
    finally:
        for hook in hooks:
            hook.remove()
    config = model.config
    rows, length = ids.shape
    width, heads = config.n_embd, config.n_head
    positions = (
        np.broadcast_to(np.arange(length), (rows, length))
        if position_ids is None
        else position_ids.numpy()
    ).astype(np.float64)
    docs = None if doc_ids is None else doc_ids.numpy()
    weights, masks = [], []
    for i, block in enumerate(model.blocks):
        h = inputs[i].double().numpy()
        w = block.attn.qkv.weight.detach().double().numpy()
        b = block.attn.qkv.bias.detach().double().numpy() if block.attn.qkv.bias is not None else 0
        qkv = h @ w.T + b
        q = qkv[..., :width].reshape(rows, length, heads, -1).transpose(0, 2, 1, 3)
        k = qkv[..., width : 2 * width].reshape(rows, length, heads, -1).transpose(0, 2, 1, 3)
        if config.positions == "rotary":
            q, k = _rotate(q, positions, config.rope_base), _rotate(k, positions, config.rope_base)
        mask = reference_mask(length, model.attention_spans[i], docs, rows)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        if config.positions == "alibi":  # -m_h (i - j), the paper's slopes
            distance = np.arange(length)[:, None] - np.arange(length)[None, :]
            scores = scores - _alibi_slopes(heads)[:, None, None] * distance
        scores = np.where(mask[:, None], scores, -np.inf)
        scores -= scores.max(-1, keepdims=True)
        exp = np.exp(scores)
        weights.append(exp / exp.sum(-1, keepdims=True))
        masks.append(mask)
    return weights, masks


def event_corpus(out: Path, sequences: list[list[str]], times: list[list[float]] | None = None):
    """A corpus on disk from token strings, one entity per sequence, all in `held_out`
    except the first, which is `train` (the vocabulary is fitted on train: put every
    symbol there)."""
    from seqlm.corpora_adapters.base import Ingested, RejectLog
    from seqlm.corpus import build_corpus
    from seqlm.corpus.splits import SplitConfig
    from seqlm.events import EventTable
    from seqlm.vocabularies import TokenScheme

    rows = []
    for number, codes in enumerate(sequences):
        split = "train" if number == 0 else "held_out"
        for position, code in enumerate(codes):
            time = None if times is None else times[number][position]
            rows.append((f"s{number:05d}", time, position, "sym", code, split))
    frame = pl.DataFrame(
        rows,
        schema={
            "entity": pl.String,
            "time": pl.Float64,
            "order": pl.Int64,
            "kind": pl.String,
            "code": pl.String,
            "split": pl.String,
        },
        orient="row",
    )
    ingested = Ingested(EventTable.from_frame(frame, ()), RejectLog(), frame.height, "test", {})
    return build_corpus(ingested, out, TokenScheme(), SplitConfig())


def save_run(folder: Path, model: GPT, corpus) -> Path:
    """A run folder for `model` written with the trainer's checkpoint writer (latest only)."""
    from seqlm.training.checkpoint import RunFolder
    from seqlm.training.config import TrainConfig
    from seqlm.training.session import corpus_identity

    run = RunFolder(folder)
    config = {
        "model_type": "gpt",
        "model": model.config.to_dict(),
        "train": TrainConfig(max_steps=1).to_dict(),
        "corpus": corpus_identity(corpus),
    }
    run.write_config(config, tokenizer=Path(corpus.path) / "tokenizer.json")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run.save_checkpoint(1, state, {}, {"step": 1}, keep_last=1)
    return folder
