"""Next-token logits for a batch of sampled rows, through the model's KV cache or not, with
the sliding window of `seqlm.evaluation.generate` (see its module docstring): the model
sees the tokens from position ceil((L - C) / s) * s on, which depends only on the length
L, so the cached and the plain path compute the same logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlm.errors import ConfigError
from seqlm.model.gpt import GPT
from seqlm.model.kv_cache import KVCache


def window_start(length: int, block_size: int, shift: int) -> int:
    """First position the model sees when the sequence has `length` tokens (see module)."""
    if length <= block_size:
        return 0
    return -(-(length - block_size) // shift) * shift


class Decoder:
    """Next-token logits for a batch of equal-length rows, cached or not."""

    def __init__(self, model: nn.Module, use_cache: bool, shift: int | None) -> None:
        self.model = model
        self.cached = use_cache and isinstance(model, GPT)
        self.block_size = _block_size(model)
        if shift is not None and shift > self.block_size:
            raise ConfigError(f"window_shift {shift} exceeds the block size {self.block_size}")
        self.shift = shift or max(1, self.block_size // 2)
        self.cache: KVCache | None = None
        self.start = 0

    def first(self, prompt: Tensor, batch: int) -> Tensor:
        """Encode the (1, P) prompt once; logits (batch, V) for the first new token."""
        self.start = window_start(prompt.shape[1], self.block_size, self.shift)
        window = prompt[:, self.start :]
        if not self.cached:
            return self.model(window).logits[:, -1].expand(batch, -1)
        self.cache = KVCache.empty(self.model, 1)
        logits = self._cached_logits(window)
        self.cache = self.cache.expand(batch)
        return logits.expand(batch, -1)

    def next(self, rows: Tensor) -> Tensor:
        """Logits (B, V) after `rows` (B, L), whose last token is new since the last call."""
        start = window_start(rows.shape[1], self.block_size, self.shift)
        if not self.cached:
            return self.model(rows[:, start:]).logits[:, -1]
        assert self.cache is not None
        if start != self.start:  # the window jumped: encode it afresh
            self.start = start
            self.cache = KVCache.empty(self.model, rows.shape[0])
            return self._cached_logits(rows[:, start:])
        return self._cached_logits(rows[:, -1:])

    def _cached_logits(self, new: Tensor) -> Tensor:
        """Logits (B, V) after the new tokens (B, T), which join the cache."""
        return self.model(new, cache=self.cache).logits[:, -1]

    def keep_rows(self, keep: Tensor) -> None:
        if self.cache is not None:
            self.cache.keep_rows(keep)


def _block_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "block_size", None)
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"{type(model).__name__} has no config.block_size to bound its context")
    return size


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
