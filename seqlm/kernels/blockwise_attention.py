"""Causal attention within documents and windows without a T x T tensor (any device).

Two exact reformulations of masked attention, both built from plain
`F.scaled_dot_product_attention` calls so autograd gives the backward:

- **Documents** (`doc_ids`, no binding window): query i may only see keys of its own
  document, so attention over a packed row is independent causal attention over each
  document segment. Segments are gathered into buckets of similar length, padded at
  the end to the bucket length, and each bucket is one SDPA call with `is_causal=True`
  and no mask tensor. End padding cannot change a real query's result: under the
  causal rule a query never sees a later position, and the padded queries' outputs
  are dropped (their gradient is zero). Work is sum(bucket length^2), not T^2.
- **Window** w (with or without documents): queries are cut into blocks of
  `block` >= w positions; block b only needs keys [b*block - w, (b+1)*block), so each
  block is one row of a batched SDPA call whose boolean mask is (block, block + w),
  not (T, T). Memory and work are O(T x (block + w)).

Documents are contiguous runs of equal ids along a row (what a packing loader lays
out). The dense rule compares ids, so a row that reuses an id after another document
is not a run layout; `is_run_layout` tells the dispatcher, which then keeps the dense
path.

q, k, v are (B, H, T, d); the result is (B, H, T, d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Segments shorter than this share one bucket (padding them costs next to nothing).
MIN_BUCKET = 8
# Query block of the windowed path: at least the window, and not so small that the
# batched call is all overhead.
MIN_QUERY_BLOCK = 128


def bucket_length(length: int) -> int:
    """The padded length of a segment: a multiple of 2^(floor(log2 L) - 2), >= MIN_BUCKET.

    Padding is at most a quarter of the segment, and there are about four buckets per
    doubling of length, so a row of many documents costs few SDPA calls.
    """
    if length <= MIN_BUCKET:
        return MIN_BUCKET
    granule = 1 << max(0, length.bit_length() - 3)
    return -(-length // granule) * granule


def is_run_layout(doc_ids: Tensor) -> bool:
    """Whether every row's documents are contiguous runs (no id reappears later)."""
    changes = (doc_ids[:, 1:] != doc_ids[:, :-1]).sum(dim=1)
    ordered = doc_ids.sort(dim=1).values
    distinct = (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
    return bool(torch.equal(changes, distinct))


def document_segments(doc_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Starts (flat index into B*T) and lengths of the runs of equal ids, on the CPU."""
    ids = doc_ids.cpu()
    batch, length = ids.shape
    starts = torch.ones(batch, length, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    flat_starts = starts.flatten().nonzero().flatten()
    ends = torch.cat([flat_starts[1:], torch.tensor([batch * length])])
    return flat_starts, ends - flat_starts


def max_segment_length(doc_ids: Tensor) -> int:
    """Length of the longest run of equal ids in any row."""
    return int(document_segments(doc_ids)[1].max())


def _flat_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B*T, H, d): one row per position (a view when x is laid out
    (B, T, H, d), as the model's q/k/v projections are; else one copy)."""
    batch, heads, length, width = x.shape
    return x.transpose(1, 2).reshape(batch * length, heads, width)


def document_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    doc_ids: Tensor,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Causal attention inside each document segment, batched by segment length.

    A padded position reads its segment's first row (any real row would do: the causal
    rule hides end padding from every real query) and writes its output to one spare
    row past the end, which is dropped; so besides each bucket's gathered q, k, v and
    output nothing T-sized is copied.
    """
    batch, heads, length, width = q.shape
    starts, lengths = document_segments(doc_ids)
    rows = batch * length
    flat = [_flat_heads(x) for x in (q, k, v)]
    buckets = torch.tensor([bucket_length(int(n)) for n in lengths])
    result = q.new_empty(rows + 1, heads, width)  # the last row takes padded outputs
    for size in buckets.unique().tolist():
        chosen = (buckets == size).nonzero().flatten()
        index = starts[chosen, None] + torch.arange(size)[None, :]
        real = index < (starts + lengths)[chosen, None]
        read = torch.where(real, index, starts[chosen, None]).to(q.device)
        write = torch.where(real, index, torch.full_like(index, rows)).to(q.device)
        qb, kb, vb = (x[read].transpose(1, 2) for x in flat)  # (n, H, size, d)
        out = F.scaled_dot_product_attention(
            qb, kb, vb, is_causal=True, scale=scale, dropout_p=dropout_p
        )
        result.index_put_((write.flatten(),), out.transpose(1, 2).reshape(-1, heads, width))
    return result[:rows].view(batch, length, heads, width).transpose(1, 2)


def _query_blocks(x: Tensor, block: int, blocks: int) -> Tensor:
    """(B, H, T, d) -> (B*blocks, H, block, d), end-padded with zeros."""
    batch, heads, length, width = x.shape
    x = F.pad(x, (0, 0, 0, blocks * block - length))
    x = x.view(batch, heads, blocks, block, width).permute(0, 2, 1, 3, 4)
    return x.reshape(batch * blocks, heads, block, width)


def _key_blocks(x: Tensor, block: int, blocks: int, window: int) -> Tensor:
    """(B, H, T, d) -> (B*blocks, H, block + window, d): block b's keys start at b*block - w."""
    batch, heads, length, width = x.shape
    x = F.pad(x, (0, 0, window, blocks * block - length))
    x = x.unfold(2, block + window, block)  # (B, H, blocks, d, block + w), a view
    x = x.permute(0, 2, 1, 4, 3)
    return x.reshape(batch * blocks, heads, block + window, width)


def _window_mask(
    batch: int,
    length: int,
    block: int,
    blocks: int,
    window: int,
    doc_ids: Tensor | None,
    device: torch.device,
) -> Tensor:
    """(B*blocks or blocks, 1, block, block + w) bool: True where query may see key."""
    starts = torch.arange(blocks, device=device)[:, None, None] * block
    query = starts + torch.arange(block, device=device)[None, :, None]
    key = starts - window + torch.arange(block + window, device=device)[None, None, :]
    allowed = (key <= query) & (key > query - window) & (key >= 0)
    if doc_ids is None:
        return allowed[:, None]
    # End padding gets one id of its own on both sides, so a padded query sees itself;
    # front padding (negative key positions) is already excluded above.
    padded = F.pad(doc_ids, (window, blocks * block - length), value=-1)
    query_doc = padded[:, window:].reshape(batch, blocks, block)
    key_doc = padded.unfold(1, block + window, block)  # (B, blocks, block + w)
    same = query_doc[..., :, None] == key_doc[..., None, :]
    return (allowed[None] & same).reshape(batch * blocks, 1, block, block + window)


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    doc_ids: Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Sliding-window causal attention (keys i - w < j <= i), by query blocks."""
    batch, heads, length, width = q.shape
    block = min(max(window, MIN_QUERY_BLOCK), length)
    blocks = math.ceil(length / block)
    mask = _window_mask(batch, length, block, blocks, window, doc_ids, q.device)
    if doc_ids is None and batch > 1:
        mask = mask.repeat(batch, 1, 1, 1)
    out = F.scaled_dot_product_attention(
        _query_blocks(q, block, blocks),
        _key_blocks(k, block, blocks, window),
        _key_blocks(v, block, blocks, window),
        attn_mask=mask,
        scale=scale,
        dropout_p=dropout_p,
    )
    out = out.view(batch, blocks, heads, block, width).permute(0, 2, 1, 3, 4)
    return out.reshape(batch, heads, blocks * block, width)[:, :, :length]


def blockwise_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None = None,
    doc_ids: Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Causal attention within `window` and documents, with no T x T tensor.

    Without a binding window `doc_ids` must be a run layout (`is_run_layout`), else
    ValueError; the window path compares ids and takes any layout. A window no shorter than every document (or than T) binds nothing and is
    dropped; then documents go by segments, and with neither it is one causal call.
    """
    length = q.shape[2]
    runs = doc_ids is None or is_run_layout(doc_ids)
    if window is not None and window >= length:
        window = None
    if (
        window is not None
        and doc_ids is not None
        and runs
        and window >= max_segment_length(doc_ids)
    ):
        window = None  # no document is longer than the window: it binds nothing
    if window is not None:
        return window_attention(q, k, v, window, doc_ids, scale=scale, dropout_p=dropout_p)
    if doc_ids is not None:
        if not runs:
            raise ValueError("blockwise attention needs documents as contiguous runs of ids")
        return document_attention(q, k, v, doc_ids, scale=scale, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, dropout_p=dropout_p)
