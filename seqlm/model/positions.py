"""Position information: learned absolute embeddings or rotary (RoPE) on q and k.

Both take optional `position_ids` (B, T): the loader restarts positions at each
document start in a packed row, so a document sees the same positions wherever it was
packed. Without them positions are 0..T-1 for every row.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LearnedPositions(nn.Module):
    """A learned vector per position, added to the token embeddings (GPT-2)."""

    def __init__(self, block_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(block_size, dim)

    def forward(self, seq_len: int, position_ids: Tensor | None, device: torch.device) -> Tensor:
        """(T, C) when positions are 0..T-1 (broadcast over the batch), else (B, T, C)."""
        if position_ids is None:
            return self.embedding(torch.arange(seq_len, device=device))
        return self.embedding(position_ids)


class RotaryPositions(nn.Module):
    """Rotary position embedding (Su et al., RoFormer), half-split layout.

    Channel pairs (c, c + d/2) of every head are rotated by angle pos * base^(-2c/d),
    so q·k depends on positions only through their difference. cos/sin for positions
    0..block_size-1 are computed once and kept as non-persistent buffers: they follow
    the module across devices but are not weights, so checkpoints do not hold them.
    """

    def __init__(self, head_dim: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        half = head_dim // 2
        inv_freq = base ** (-torch.arange(half, dtype=torch.float64) * 2.0 / head_dim)
        angles = torch.arange(block_size, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.register_buffer("cos_cached", angles.cos().float(), persistent=False)
        self.register_buffer("sin_cached", angles.sin().float(), persistent=False)

    def forward(self, seq_len: int, position_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """cos, sin shaped to broadcast over (B, H, T, d/2): (T, d/2) or (B, 1, T, d/2)."""
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
