"""Position information: learned absolute embeddings, rotary (RoPE) on q and k, or ALiBi.

ALiBi (Press et al. 2021) adds no vector anywhere: each head h adds -m_h * (i - j) to
the score of query i on key j (slopes `alibi_slopes`, geometric in h), a recency prior
that costs no parameters; heads with small slopes stay free for long range. The bias
depends only on the token distance i - j in the row, so it needs no `position_ids`:
inside a packed document the distance is the difference of restarted positions, and
across documents the document mask hides the key anyway. The model folds the bias and
its boolean mask into one float mask per forward (`alibi_mask`).

Both take optional `position_ids` (B, T): the loader restarts positions at each
document start in a packed row, so a document sees the same positions wherever it was
packed. Without them positions are 0..T-1 for every row.

Contexts longer than trained (`extend_context`):
- rotary positions extend: with `interpolate=True` (position interpolation, Chen et
  al. 2023) position p is rotated as p * trained / new, so every angle the model sees
  is one it was trained on (a short fine-tune at the new length recovers the loss);
  with `interpolate=False` the angles extrapolate past the trained range, with a
  warning, since quality past it is not known;
- ALiBi extends as it is: the bias of a distance past the trained length is the same
  line continued (the paper's "train short, test long");
- learned positions cannot extend: there is no vector for a position past the table,
  and asking for one is a `ConfigError` naming the table size.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from torch import Tensor, nn

from seqlm.errors import ConfigError


class LearnedPositions(nn.Module):
    """A learned vector per position, added to the token embeddings (GPT-2)."""

    def __init__(self, block_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(block_size, dim)

    def forward(self, seq_len: int, position_ids: Tensor | None, device: torch.device) -> Tensor:
        """(T, C) when positions are 0..T-1 (broadcast over the batch), else (B, T, C)."""
        size = self.embedding.num_embeddings
        if seq_len > size:
            raise ConfigError(
                f"learned positions cover 0..{size - 1} and cannot extend to {seq_len} tokens; "
                "use rotary positions for contexts longer than trained"
            )
        if position_ids is None:
            return self.embedding(torch.arange(seq_len, device=device))
        return self.embedding(position_ids)


class RotaryPositions(nn.Module):
    """Rotary position embedding (Su et al., RoFormer), half-split layout.

    Channel pairs (c, c + d/2) of every head are rotated by angle pos * base^(-2c/d),
    so q·k depends on positions only through their difference. cos/sin for positions
    0..block_size-1 are computed once and kept as non-persistent buffers: they follow
    the module across devices but are not weights, so checkpoints do not hold them.

    `scale` > 1 is position interpolation: position p gets the angles of p / scale.
    """

    def __init__(
        self, head_dim: int, block_size: int, base: float = 10000.0, scale: float = 1.0
    ) -> None:
        super().__init__()
        if scale < 1.0:
            raise ConfigError(f"rotary scale must be >= 1 (interpolation), not {scale}")
        self.head_dim = head_dim
        self.base = base
        self.scale = scale
        half = head_dim // 2
        inv_freq = base ** (-torch.arange(half, dtype=torch.float64) * 2.0 / head_dim)
        positions = torch.arange(block_size, dtype=torch.float64) / scale
        angles = positions[:, None] * inv_freq[None, :]
        self.register_buffer("cos_cached", angles.cos().float(), persistent=False)
        self.register_buffer("sin_cached", angles.sin().float(), persistent=False)

    def forward(self, seq_len: int, position_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """cos, sin shaped to broadcast over (B, H, T, d/2): (T, d/2) or (B, 1, T, d/2)."""
        if seq_len > self.cos_cached.shape[0]:
            raise ConfigError(
                f"rotary positions are built for {self.cos_cached.shape[0]} tokens, not "
                f"{seq_len}; extend the model with seqlm.model.positions.extend_context"
            )
        if position_ids is None:
            return self.cos_cached[:seq_len], self.sin_cached[:seq_len]
        return self.cos_cached[position_ids][:, None], self.sin_cached[position_ids][:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, d) by the angles in cos/sin (half-split pairs (c, c + d/2))."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def document_positions(doc_ids: Tensor) -> Tensor:
    """Position of each token within its document in packed rows: (B, T) int64.

    A document is a run of equal ids along a row; positions restart at 0 where the id
    changes. This is the `position_ids` a packing loader passes with `doc_ids`.
    """
    seq_len = doc_ids.shape[-1]
    index = torch.arange(seq_len, device=doc_ids.device).expand_as(doc_ids)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[..., 1:] = doc_ids[..., 1:] != doc_ids[..., :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index))
    return index - torch.cummax(start_index, dim=-1).values


def alibi_slopes(n_head: int) -> Tensor:
    """Per-head slopes (H,) float32: 2^(-8h/H) for h = 1..H when H is a power of two.

    Other head counts take the slopes of the power of two n below H and then every
    other slope of 2n (the ALiBi paper's code), so the slopes stay a spread from
    about 1/2 (local heads) down to 2^-8 (near-uniform heads).
    """

    def geometric(count: int) -> list[float]:
        return [2.0 ** (-8.0 * h / count) for h in range(1, count + 1)]

    below = 2 ** math.floor(math.log2(n_head))
    slopes = geometric(below) + geometric(2 * below)[0::2][: n_head - below]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_mask(allowed: Tensor | None, slopes: Tensor, start: int, count: int) -> Tensor:
    """The float attention mask (B or 1, H, count, start + count) of ALiBi.

    Queries are row positions start..start + count - 1 (start = the cached length),
    keys 0..start + count - 1. Where `allowed` (boolean, broadcastable to (B, 1,
    count, start + count), True = may attend) holds, the entry is -m_h * (i - j); else
    -inf. `allowed` None is causal aligned at the last key (key j <= query i), what a
    mask of None means to the attention. Given to SDPA as `attn_mask`, it is added to
    the scaled scores q.k / sqrt(d) before the softmax.
    """
    device = slopes.device
    query = torch.arange(start, start + count, device=device)[:, None]
    key = torch.arange(start + count, device=device)[None, :]
    if allowed is None:
        allowed = (key <= query)[None, None]
    distance = (query - key).to(slopes.dtype)
    bias = -slopes[:, None, None] * distance  # (H, count, keys)
    return torch.where(allowed.to(device), bias[None], float("-inf"))


def extend_context(model: nn.Module, block_size: int, *, interpolate: bool = True) -> float:
    """Let a trained GPT run on rows of up to `block_size` tokens; returns the rotary scale.

    Rotary models get new cos/sin tables: interpolated (scale = new / trained, the
    angles stay in the trained range) or, with `interpolate=False`, extrapolated with a
    `UserWarning`. ALiBi models need nothing new (scale 1.0). Learned positions raise
    `ConfigError`. The model's `config.block_size`
    follows, so its length check and KV cache see the new length; nothing is saved in
    checkpoints, so call this again after loading.
    """
    config = model.config
    trained = int(config.block_size)
    if block_size <= trained:
        return 1.0
    if getattr(model, "position_embedding", None) is not None:
        raise ConfigError(
            f"this model has learned positions for {trained} tokens; they cannot extend to "
            f"{block_size} (train with positions=rotary for longer contexts)"
        )
    if getattr(model, "rotary", None) is None:  # ALiBi: the bias has no table
        model.config = dataclasses.replace(config, block_size=block_size)
        return 1.0
    rotary = model.rotary
    scale = rotary.scale * block_size / trained if interpolate else rotary.scale
    if not interpolate:
        warnings.warn(
            f"rotary positions past the trained {trained} tokens are extrapolated up to "
            f"{block_size}; quality there is untested (interpolate=True keeps the trained range)",
            UserWarning,
            stacklevel=2,
        )
    extended = RotaryPositions(rotary.head_dim, block_size, rotary.base, scale=scale)
    model.rotary = extended.to(rotary.cos_cached.device)
    model.config = dataclasses.replace(config, block_size=block_size)
    return scale
