"""Incremental decoding for the GPT: a key/value cache and a forward over new tokens only.

Without a cache, generating n tokens runs the whole context through the model n times
(quadratic work). With one, every layer's keys and values of the tokens seen so far are
kept, and each step runs only the newest token: one row of attention against the cache.

The cached forward is written here, beside the model rather than inside it, from the
model's own parts (`Block.attn_norms.residual_step`, `attn.qkv`, `attn.proj`, `mlp`,
positions, final norm, LM head), so `seqlm.model` stays unchanged and every norm
placement, position type and attention span the model supports is decoded the same
way its own forward computes it. `tests/evaluation/test_kv_cache.py` checks the logits
against `GPT.forward` for each variant.

Positions are absolute within the current window: the first cached token is position 0,
exactly as when the window's tokens are fed to `GPT.forward` in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlm.errors import ConfigError
from seqlm.model.gpt import GPT
from seqlm.model.positions import apply_rotary


@dataclass
class KVCache:
    """Keys and values of every layer for the first `length` positions of a window.

    `keys[l]` and `values[l]` are (B, H, capacity, head_dim); `capacity` is the model's
    block size, the longest window it can attend over.
    """

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0

    @classmethod
    def empty(
        cls,
        model: GPT,
        batch: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        config = model.config
        weight = model.token_embedding.weight
        shape = (batch, config.n_head, config.block_size, config.head_dim)
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        layers = len(model.blocks)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)],
        )

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def expand(self, batch: int) -> KVCache:
        """A cache of `batch` rows, each a copy of this one-row cache (a prompt encoded
        once, then sampled many times)."""
        if self.batch != 1:
            raise ConfigError(f"only a one-row cache can be expanded, this one has {self.batch}")
        return KVCache(
            keys=[k.expand(batch, -1, -1, -1).contiguous() for k in self.keys],
            values=[v.expand(batch, -1, -1, -1).contiguous() for v in self.values],
            length=self.length,
        )

    def keep_rows(self, rows: Tensor) -> None:
        """Keep only the given batch rows (drop finished samples, saving their compute)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


def _query_mask(start: int, count: int, span: int | None, device: torch.device) -> Tensor | None:
    """Boolean (1, 1, count, start + count) mask for queries at positions
    start..start+count-1 over keys 0..start+count-1; None when every query may see every
    cached key (a single query with no span)."""
    total = start + count
    if count == 1 and (span is None or span >= total):
        return None
    query = torch.arange(start, total, device=device)[:, None]
    key = torch.arange(total, device=device)[None, :]
    allowed = key <= query
    if span is not None:
        allowed = allowed & (key > query - span)
    return allowed[None, None]


def _cached_attention(
    block_index: int,
    model: GPT,
    x: Tensor,
    cache: KVCache,
    rotary: tuple[Tensor, Tensor] | None,
    span: int | None,
) -> Tensor:
    attn = model.blocks[block_index].attn
    batch, count, width = x.shape
    start = cache.length
    q, k, v = attn.qkv(x).split(width, dim=2)
    q = q.view(batch, count, attn.n_head, attn.head_dim).transpose(1, 2)
    k = k.view(batch, count, attn.n_head, attn.head_dim).transpose(1, 2)
    v = v.view(batch, count, attn.n_head, attn.head_dim).transpose(1, 2)
    if rotary is not None:
        cos, sin = rotary
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
    cache.keys[block_index][:, :, start : start + count] = k
    cache.values[block_index][:, :, start : start + count] = v
    keys = cache.keys[block_index][:, :, : start + count]
    values = cache.values[block_index][:, :, : start + count]
    mask = _query_mask(start, count, span, x.device)
    if start == 0 and mask is not None and span is None:
        # The whole window at once: the fused causal path, as GPT.forward takes it.
        y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
    else:
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    return attn.proj(y.transpose(1, 2).reshape(batch, count, width))


@torch.no_grad()
def cached_forward(model: GPT, idx: Tensor, cache: KVCache) -> Tensor:
    """Logits (B, T, V) of `idx` (B, T), the tokens following the `cache.length` cached
    ones; their keys and values are added to the cache.

    The model must be in eval mode (no dropout): a cache replays a deterministic forward.
    """
    if not isinstance(model, GPT):
        raise ConfigError(f"a KV cache needs a seqlm GPT, got {type(model).__name__}")
    if model.training:
        raise ConfigError("call model.eval() before decoding with a KV cache")
    batch, count = idx.shape
    start = cache.length
    if batch != cache.batch:
        raise ConfigError(f"the cache holds {cache.batch} rows, the input {batch}")
    if start + count > cache.capacity:
        raise ConfigError(
            f"{start} cached + {count} new tokens exceed the model's block_size {cache.capacity}"
        )
    positions = torch.arange(start, start + count, device=idx.device)[None, :]
    x = model.token_embedding(idx)
    if model.position_embedding is not None:
        x = x + model.position_embedding(count, positions, idx.device)
    if model.embedding_norm is not None:
        x = model.embedding_norm(x)
    rotary = model.rotary(count, positions) if model.rotary is not None else None
    spans = model.attention_spans
    for i, block in enumerate(model.blocks):
        x = block.attn_norms.residual_step(
            x, lambda h, i=i: _cached_attention(i, model, h, cache, rotary, spans[i])
        )
        x = block.mlp_norms.residual_step(x, block.mlp)
    cache.length = start + count
    return model.lm_head(model.final_norm(x))
