"""Causal self-attention with optional document and span masks and a KV cache.

Attention always goes through `F.scaled_dot_product_attention`. With no document ids
and no span the call uses `is_causal=True` and no mask tensor at all, which is the
fused fast path; a boolean mask (True = may attend) is built only when a document mask
or a span is asked for, once per forward and shared by the layers that need it.

Mask rules, for query i and key j in one row:
- causal: j <= i;
- span w: i - w < j <= i (the query and the w - 1 keys before it);
- document: doc_ids[j] == doc_ids[i] (packed sequences never attend across documents).
The diagonal is always allowed, so no row is ever empty.

With ALiBi positions the model passes a float mask instead (the rule as -inf plus the
recency bias, `seqlm.model.positions.alibi_mask`); it goes to SDPA as `attn_mask`, and
`attention_weights` adds it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlm.kernels.blockwise_attention import is_run_layout, max_segment_length
from seqlm.kernels.lazy_mask import LazyAttentionMask
from seqlm.kernels.projected_attention import projected_attention, projected_attention_block
from seqlm.kernels.windowed_attention import BLOCKWISE_MIN_LENGTH, masked_attention
from seqlm.model.kv_cache import KVCache
from seqlm.model.positions import apply_rotary


def attention_mask(
    seq_len: int,
    *,
    doc_ids: Tensor | None = None,
    span: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """Boolean mask (True = may attend), or None when plain causal attention suffices.

    Shape (B, 1, T, T) with `doc_ids` (B, T), else (1, 1, T, T) (broadcast over the
    batch). A span of at least `seq_len` is the same as no span. Outside
    torch.compile the mask is a `LazyAttentionMask`: it holds only doc_ids and span
    (the attention call computes block-wise from them) and becomes dense when read.
    """
    if span is not None and span >= seq_len:
        span = None
    if doc_ids is None and span is None:
        return None
    if not torch.compiler.is_compiling():
        return LazyAttentionMask(seq_len, doc_ids, span, device)
    if doc_ids is not None:
        device = doc_ids.device
    query = torch.arange(seq_len, device=device)[:, None]
    key = torch.arange(seq_len, device=device)[None, :]
    allowed = key <= query
    if span is not None:
        allowed = allowed & (key > query - span)
    allowed = allowed[None, None]
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, None, :, None] == doc_ids[:, None, None, :])
    return allowed


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> Tensor:
    """The plain causal mask as a (1, 1, T, T) boolean tensor (what is_causal means)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()[None, None]


def attention_weights(
    q: Tensor,
    k: Tensor,
    mask: Tensor,
    *,
    scale: float | None = None,
    query_start: int = 0,
    query_stop: int | None = None,
) -> Tensor:
    """Softmax attention weights for queries [query_start, query_stop), eagerly.

    `mask` is boolean (True = may attend) or, for ALiBi, the float mask the model gave
    SDPA (added to the scaled scores), so the weights are the ones the model used.

    (B, H, Q, T) for a chunk of Q queries, so analysis can go through long sequences
    in chunks instead of holding the full T x T map per head.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    stop = q.shape[-2] if query_stop is None else query_stop
    scores = (q[..., query_start:stop, :] @ k.transpose(-2, -1)) * scale
    rows = mask[..., query_start:stop, :]
    if rows.dtype.is_floating_point:  # ALiBi: the bias, -inf where masked (SDPA adds it)
        scores = scores + rows.to(scores.dtype)
    else:
        scores = scores.masked_fill(~rows, float("-inf"))
    return torch.softmax(scores, dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (fused q/k/v projection, GPT-2 layout).

    With a `cache` the new tokens' keys and values are stored in it and the queries
    attend over every cached position; a `mask` of None then means causal aligned at the
    last key (plain causal when query and key lengths agree, all keys for one query).
    """

    def __init__(
        self, n_embd: int, n_head: int, *, bias: bool, dropout: float, layer_index: int
    ) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.layer_index = layer_index
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout

    def project(
        self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v (B, H, T, d) of `x` (B, T, C), rotary applied to q and k."""
        batch, seq_len, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q = q.view(batch, seq_len, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq_len, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq_len, self.n_head, self.head_dim).transpose(1, 2)
        if rotary is not None:
            cos, sin = rotary
            q = apply_rotary(q, cos, sin)
            k = apply_rotary(k, cos, sin)
        return q, k, v

    def uses_projected_path(self, x: Tensor, mask: Tensor | None) -> bool:
        """Whether `normed_forward` can take `seqlm.kernels.projected_attention` for `x`.

        On the CPU, in float32/64 without autocast, with no dropout and no hooks on this
        module or its q/k/v projection (which that kernel would bypass), from
        `BLOCKWISE_MIN_LENGTH` positions, for plain causal attention or a lazy document
        mask of contiguous runs whose span (if any) binds no document.
        """
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return False
        if torch.is_autocast_enabled("cpu") or (self.dropout and self.training):
            return False
        if any(m._forward_hooks or m._forward_pre_hooks for m in (self, self.qkv)):
            return False
        length = x.shape[1]
        if length < BLOCKWISE_MIN_LENGTH or mask is None:
            return length >= BLOCKWISE_MIN_LENGTH
        if not isinstance(mask, LazyAttentionMask):
            return False
        doc_ids, span = mask.doc_ids, mask.span
        if doc_ids is not None and not is_run_layout(doc_ids):
            return False
        if span is None or span >= length:
            return True
        return doc_ids is not None and span >= max_segment_length(doc_ids)

    def normed_forward(
        self,
        x: Tensor,
        norm: nn.Module | None,
        rotary: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """`self(norm(x), rotary, mask)` (no norm: `self(x, ...)`); through the fused
        kernel, which keeps only x, its output and the log-sum-exp for the backward,
        where `uses_projected_path(x, mask)`."""
        if not self.uses_projected_path(x, mask):
            return self(x if norm is None else norm(x), rotary, mask)
        return self.proj(self.projected_heads(x, norm, rotary, mask))  # no dropout here

    def projected_heads(
        self,
        x: Tensor,
        norm: nn.Module | None,
        rotary: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """The heads' output (B, T, C) before `proj`, through the fused kernel; only
        where `uses_projected_path(x, mask)`."""
        return projected_attention(
            x,
            self.qkv.weight,
            self.qkv.bias,
            self.n_head,
            None if mask is None else mask.doc_ids,
            rotary,
            norm=norm,
            norm_params=() if norm is None else list(norm.parameters()),
        )

    def projected_block(
        self,
        x: Tensor,
        norm: nn.Module | None,
        rotary: tuple[Tensor, Tensor] | None,
        mask: Tensor | None,
        rest: Callable[[Tensor, Tensor], Tensor],
        rest_params: list[Tensor],
        chunk_tokens: int,
    ) -> Tensor:
        """`rest(x, heads)` with the heads from the fused kernel and a per-token `rest`
        (`seqlm.kernels.projected_attention.projected_attention_block`); only where
        `uses_projected_path(x, mask)`."""
        return projected_attention_block(
            x,
            self.qkv.weight,
            self.qkv.bias,
            self.n_head,
            None if mask is None else mask.doc_ids,
            rotary,
            rest,
            rest_params,
            chunk_tokens=chunk_tokens,
            norm=norm,
            norm_params=() if norm is None else list(norm.parameters()),
        )

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        batch, seq_len, width = x.shape
        q, k, v = self.project(x, rotary)
        if cache is not None:
            k, v = cache.store(self.layer_index, k, v)
        # Plain causal when queries and keys are the same positions; a single cached
        # query (mask None) sees every key.
        causal = q.shape[2] == k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
        else:  # a lazy mask goes block-wise on long CPU rows; a dense one to SDPA
            if mask.dtype.is_floating_point and mask.dtype != q.dtype:
                mask = mask.to(q.dtype)  # ALiBi's float mask under autocast
            y = masked_attention(q, k, v, mask, dropout_p=dropout_p)
        # (B, T, C) with head h in channels h*d..(h+1)*d: what head-level analyses hook.
        y = self.proj(y.transpose(1, 2).reshape(batch, seq_len, width))
        if dropout_p:
            y = F.dropout(y, p=dropout_p, training=True)
        return y
