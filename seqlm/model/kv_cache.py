"""The key/value cache `GPT.forward(..., cache=)` decodes with (incremental decoding).

Without a cache, generating n tokens runs the whole context through the model n times
(quadratic work). With one, every layer's keys and values of the tokens seen so far are
kept, and a call runs only the new tokens: their rows of attention against the cache.
The model's own forward does the work (`CausalSelfAttention` stores its k, v here), so
every norm placement, position type, attention span and document mask is decoded the
same way as without a cache; `tests/model/test_kv_cache.py` checks it.

Positions are absolute within the cached window: the first cached token is position 0,
exactly as when the window's tokens are fed to `GPT.forward` in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlm.errors import ConfigError


@dataclass
class KVCache:
    """Keys and values of every layer for the first `length` positions of a window.

    `keys[l]` and `values[l]` are (B, H, capacity, head_dim); `capacity` is the model's
    block size, the longest window it can attend over. `doc_ids` (B, capacity) holds the
    document id of each cached position when the calls pass `doc_ids`, else None.
    """

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0
    doc_ids: Tensor | None = None

    @classmethod
    def empty(
        cls,
        model: nn.Module,
        batch: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache of `batch` rows for `model`, a `seqlm.model.GPT` (its device and
        dtype by default; typed as a module because gpt.py imports this one)."""
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
        doc_ids = None if self.doc_ids is None else self.doc_ids.expand(batch, -1).contiguous()
        return KVCache(
            keys=[k.expand(batch, -1, -1, -1).contiguous() for k in self.keys],
            values=[v.expand(batch, -1, -1, -1).contiguous() for v in self.values],
            length=self.length,
            doc_ids=doc_ids,
        )

    def keep_rows(self, rows: Tensor) -> None:
        """Keep only the given batch rows (drop finished samples, saving their compute)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        if self.doc_ids is not None:
            self.doc_ids = self.doc_ids.index_select(0, rows)

    # ----- used by the model's forward -----

    def check_input(self, idx: Tensor, doc_ids: Tensor | None) -> None:
        """Raise when `idx` (B, T) cannot follow what is cached (rows, room, documents)."""
        batch, count = idx.shape
        if batch != self.batch:
            raise ConfigError(f"the cache holds {self.batch} rows, the input {batch}")
        if self.length + count > self.capacity:
            raise ConfigError(
                f"{self.length} cached + {count} new tokens exceed the model's block_size "
                f"{self.capacity}"
            )
        if self.length and (doc_ids is None) != (self.doc_ids is None):
            raise ConfigError("pass doc_ids with every cached call or with none")

    def positions(self, count: int, device: torch.device) -> Tensor:
        """Position ids (1, count) of the next `count` tokens."""
        return torch.arange(self.length, self.length + count, device=device)[None, :]

    def store_doc_ids(self, doc_ids: Tensor | None) -> Tensor | None:
        """Record the new tokens' document ids; all cached ids so far (B, length + T)."""
        if doc_ids is None:
            return None
        if self.doc_ids is None:
            self.doc_ids = torch.zeros(
                (self.batch, self.capacity), dtype=doc_ids.dtype, device=doc_ids.device
            )
        stop = self.length + doc_ids.shape[1]
        self.doc_ids[:, self.length : stop] = doc_ids
        return self.doc_ids[:, :stop]

    def store(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new tokens' keys and values (B, H, T, d) of `layer`; return every
        cached key and value of that layer, (B, H, length + T, d)."""
        stop = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : stop] = k
        self.values[layer][:, :, self.length : stop] = v
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]

    def advance(self, count: int) -> None:
        """Count the new tokens as cached (after every layer has stored them)."""
        self.length += count


def cached_attention_mask(
    start: int,
    count: int,
    *,
    span: int | None = None,
    doc_ids: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """Boolean mask (True = may attend) for queries at positions start..start+count-1
    over keys 0..start+count-1, or None when the attention needs no mask tensor.

    None means causal in the attention's sense (aligned at the last key): the plain
    causal mask when nothing is cached yet, and "every cached key" for a single query.
    `doc_ids` (B, start + count) are the documents of every key (the queries are the
    last `count`). Shape (B or 1, 1, count, start + count).
    """
    total = start + count
    if span is not None and span >= total:
        span = None
    if doc_ids is None and span is None and (start == 0 or count == 1):
        return None
    if doc_ids is not None:
        device = doc_ids.device
    query = torch.arange(start, total, device=device)[:, None]
    key = torch.arange(total, device=device)[None, :]
    allowed = key <= query
    if span is not None:
        allowed = allowed & (key > query - span)
    allowed = allowed[None, None]
    if doc_ids is not None:
        query_docs = doc_ids[:, start:]
        allowed = allowed & (query_docs[:, None, :, None] == doc_ids[:, None, None, :])
    return allowed
