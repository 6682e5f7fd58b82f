"""Causal attention restricted to a window of recent tokens, within documents.

Query i attends key j when i - window < j <= i and, with `doc_ids`, when both belong to
the same document (packed sequences never see each other). `window=None` is plain
causal attention. This is the attention-span setting (FinchGPT's span experiment, long
clinical timelines): with a window w the work should be O(T x w), not O(T^2).

Implementations, chosen by `windowed_attention` (the dispatcher):

- `reference`: dense scores, the mask applied explicitly, softmax in fp32.
- `sdpa`: `F.scaled_dot_product_attention` with an explicit boolean mask (CPU, and any
  device): fused, but still O(T^2) work and a T x T mask.
- `flex`: FlexAttention, compiled, with a `BlockMask` (CUDA): blocks wholly outside the
  window or the document are skipped, so the work is O(T x w). Block masks are cached
  per (batch, length, window, device, document layout). FlexAttention has no backward
  on CPU, so the dispatcher never picks it there.
- `blockwise` (`seqlm.kernels.blockwise_attention`): plain SDPA calls per document
  segment (`is_causal`, no mask) or per query block of a window, so there is no T x T
  tensor at all. Auto picks it on CPU for documents or a binding window once T reaches
  `BLOCKWISE_MIN_LENGTH` (below that the dense mask is small and one fused call is as
  fast); documents whose ids are not contiguous runs keep the dense path.

`masked_attention` is the model's entry point: it takes the mask the model built
(None, a dense boolean tensor, or a `LazyAttentionMask` holding doc_ids and span) and
routes a lazy one through this dispatcher. On CUDA the model keeps dense SDPA until
"windowed_attention" is in `FLEX_VERIFIED_ON_GPU` (a GPU session's `-m cuda` run).

q, k, v are (B, H, T, d); the result is (B, H, T, d_v).
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlm.errors import ConfigError
from seqlm.kernels.blockwise_attention import blockwise_attention, is_run_layout
from seqlm.kernels.dispatch import FLEX_VERIFIED_ON_GPU, choose_impl, flex_attention_usable
from seqlm.kernels.lazy_mask import LazyAttentionMask

IMPLEMENTATIONS: tuple[str, ...] = ("reference", "sdpa", "flex", "blockwise")
BLOCK_MASK_CACHE_SIZE = 16
# From this many positions auto prefers block-wise attention on CPU (measured with
# benchmarks/bench_train.py --long: at T = 1,024 it is already no slower than dense).
BLOCKWISE_MIN_LENGTH = 1024


def check_attention_arguments(
    q: Tensor, k: Tensor, window: int | None, doc_ids: Tensor | None, op: str
) -> None:
    """Shapes and window of a windowed-attention call; raises `ConfigError`."""
    if q.dim() != 4 or k.dim() != 4:
        raise ConfigError(f"{op}: q and k must be (batch, heads, tokens, head width)")
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1] or q.shape[2] != k.shape[2]:
        raise ConfigError(
            f"{op}: q {tuple(q.shape)} and k {tuple(k.shape)} must match (self-attention)"
        )
    if window is not None and window < 1:
        raise ConfigError(f"{op}: window must be >= 1 (a token always sees itself), not {window}")
    if doc_ids is not None and doc_ids.shape != (q.shape[0], q.shape[2]):
        raise ConfigError(
            f"{op}: doc_ids must be (batch, tokens) = {(q.shape[0], q.shape[2])}, "
            f"not {tuple(doc_ids.shape)}"
        )


def windowed_causal_mask(
    length: int,
    window: int | None,
    doc_ids: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean mask, True where query i may attend key j: (1 or B, 1, T, T)."""
    device = doc_ids.device if doc_ids is not None else device
    positions = torch.arange(length, device=device)
    distance = positions[:, None] - positions[None, :]
    allowed = distance >= 0
    if window is not None:
        allowed = allowed & (distance < window)
    allowed = allowed[None, None]
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, None, :, None] == doc_ids[:, None, None, :])
    return allowed


def windowed_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    doc_ids: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Dense softmax(q k^T * scale, masked) v, with the softmax in fp32."""
    check_attention_arguments(q, k, window, doc_ids, "windowed_attention")
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    mask = windowed_causal_mask(q.shape[2], window, doc_ids, q.device)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return (probs @ v.float()).to(q.dtype)


def windowed_attention_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    doc_ids: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """SDPA with an explicit boolean mask (or `is_causal` when nothing else restricts)."""
    check_attention_arguments(q, k, window, doc_ids, "windowed_attention")
    length = q.shape[2]
    if doc_ids is None and (window is None or window >= length):
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, dropout_p=dropout_p
        )
    mask = windowed_causal_mask(length, window, doc_ids, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, dropout_p=dropout_p)


def windowed_attention_blockwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    doc_ids: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Block-wise attention (no T x T tensor); documents must be contiguous runs of ids."""
    check_attention_arguments(q, k, window, doc_ids, "windowed_attention")
    try:
        return blockwise_attention(q, k, v, window, doc_ids, scale=scale, dropout_p=dropout_p)
    except ValueError as err:
        raise ConfigError(f"windowed_attention: {err}") from None


def blockwise_pays(length: int, window: int | None, doc_ids: Tensor | None) -> bool:
    """Whether auto should take the block-wise path on CPU for this call."""
    binding_window = window is not None and window < length
    if doc_ids is None and not binding_window:
        return False  # plain causal: one fused is_causal call either way
    if length < BLOCKWISE_MIN_LENGTH:
        return False
    return binding_window or is_run_layout(doc_ids)


def windowed_mask_mod(window: int | None, doc_ids: Tensor | None) -> Callable:
    """FlexAttention `mask_mod`: (batch, head, query, key) -> may attend."""

    def allowed(batch: Tensor, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        keep = key <= query
        if window is not None:
            keep = keep & (query - key < window)
        if doc_ids is not None:
            keep = keep & (doc_ids[batch, query] == doc_ids[batch, key])
        return keep

    return allowed


_block_masks: OrderedDict[tuple, object] = OrderedDict()


def windowed_block_mask(
    batch: int,
    length: int,
    window: int | None,
    doc_ids: Tensor | None,
    device: torch.device,
):
    """A FlexAttention `BlockMask` for this layout, from a small LRU cache.

    The document layout enters the key by a digest of `doc_ids`' contents (one small
    device-to-host copy), so a repeated packing reuses its mask.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    layout = None
    if doc_ids is not None:
        layout = hashlib.blake2b(doc_ids.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    key = (batch if doc_ids is not None else None, length, window, str(device), layout)
    if key in _block_masks:
        _block_masks.move_to_end(key)
        return _block_masks[key]
    block_mask = create_block_mask(
        windowed_mask_mod(window, doc_ids),
        key[0],
        None,
        length,
        length,
        device=device,
        _compile=device.type == "cuda",
    )
    _block_masks[key] = block_mask
    if len(_block_masks) > BLOCK_MASK_CACHE_SIZE:
        _block_masks.popitem(last=False)
    return block_mask


@functools.cache
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention_call(compiled: bool) -> Callable:
    """FlexAttention itself: compiled (CUDA), or eager (CPU tests of the mask logic).

    Eager FlexAttention materialises the full scores and warns that it does; the eager
    form exists here only to check the block-mask logic where there is no GPU.
    """
    if compiled:
        return _compiled_flex_attention()
    from torch.nn.attention.flex_attention import flex_attention

    def eager(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*without torch.compile.*")
            return flex_attention(*args, **kwargs)

    return eager


def windowed_attention_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    doc_ids: Tensor | None = None,
    scale: float | None = None,
    compiled: bool = True,
) -> Tensor:
    """FlexAttention with a cached block mask; `compiled=False` only for CPU tests."""
    check_attention_arguments(q, k, window, doc_ids, "windowed_attention")
    block_mask = windowed_block_mask(q.shape[0], q.shape[2], window, doc_ids, q.device)
    return flex_attention_call(compiled)(q, k, v, block_mask=block_mask, scale=scale)


def windowed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None = None,
    doc_ids: Tensor | None = None,
    *,
    scale: float | None = None,
    impl: str = "auto",
    dropout_p: float = 0.0,
) -> Tensor:
    """Causal attention within `window` tokens and within documents: the dispatcher.

    q, k, v (B, H, T, d); doc_ids (B, T) integer document numbers or None; `scale`
    defaults to 1/sqrt(d). Auto picks FlexAttention on CUDA (without dropout),
    block-wise on CPU where `blockwise_pays`, and SDPA with a mask otherwise.
    """
    if q.device.type == "cpu":
        order = ("blockwise", "sdpa") if blockwise_pays(q.shape[2], window, doc_ids) else ("sdpa",)
    else:
        order = ("flex", "sdpa") if dropout_p == 0.0 else ("sdpa",)
    chosen = choose_impl(
        "windowed_attention", impl, IMPLEMENTATIONS, q.device, order, head_dim=q.shape[-1]
    )
    if dropout_p and chosen in ("reference", "flex"):
        raise ConfigError(f"windowed_attention: the {chosen} path has no dropout")
    if chosen == "reference":
        return windowed_attention_reference(q, k, v, window, doc_ids, scale)
    if chosen == "flex":
        return windowed_attention_flex(q, k, v, window, doc_ids, scale)
    if chosen == "blockwise":
        return windowed_attention_blockwise(q, k, v, window, doc_ids, scale, dropout_p)
    return windowed_attention_sdpa(q, k, v, window, doc_ids, scale, dropout_p)


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, dropout_p: float = 0.0
) -> Tensor:
    """The model's attention call: causal SDPA under `mask` (True = may attend).

    None is plain causal attention (`is_causal`, no mask tensor); a dense mask goes to
    SDPA as it is; a `LazyAttentionMask` goes through `windowed_attention` with its
    span and document ids, so on CPU long rows never build the T x T mask.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if not isinstance(mask, LazyAttentionMask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    span, doc_ids = mask.span, mask.doc_ids
    if q.device.type == "cpu" and blockwise_pays(q.shape[2], span, doc_ids):
        return windowed_attention(q, k, v, span, doc_ids, impl="blockwise", dropout_p=dropout_p)
    flex_ok = "windowed_attention" in FLEX_VERIFIED_ON_GPU and not dropout_p
    if q.device.type == "cuda" and flex_ok and flex_attention_usable(q.device, q.shape[-1]):
        return windowed_attention(q, k, v, span, doc_ids, impl="flex")
    # The dense mask, built once and kept on the lazy mask: shared by every layer.
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense(), dropout_p=dropout_p)
