"""A (B, 1, T, T) attention mask that stores only its rule: document ids and a span.

The model builds its mask once per forward and hands it to every layer. A dense
boolean mask is B x T x T bytes (64 MiB per row at T = 8,192) before SDPA converts it
to floats. `LazyAttentionMask` is a boolean tensor of that shape whose storage is a
single element (zero strides); it keeps `doc_ids` (B, T) and `span` so that the
attention kernels (`seqlm.kernels.windowed_attention.masked_attention`) can compute
attention block-wise from the rule without ever building the square.

Anything else that uses it as a tensor (analysis indexing it, `torch.equal`, passing
it to SDPA) gets the dense mask, built on first use and kept on the object, so code
written for dense masks keeps working unchanged. Shape, dtype and device queries do
not build it.

Rule, for query i and key j of one row: j <= i; with a span w also j > i - w; with
documents also doc_ids[i] == doc_ids[j].
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

# Tensor attributes answered from the placeholder without building the dense mask.
_METADATA = frozenset(
    {
        Tensor.shape.__get__,
        Tensor.dtype.__get__,
        Tensor.device.__get__,
        Tensor.ndim.__get__,
        Tensor.is_cuda.__get__,
        Tensor.requires_grad.__get__,
        Tensor.size,
        Tensor.dim,
        Tensor.numel,
    }
)


def dense_attention_mask(length: int, doc_ids: Tensor | None, span: int | None, device) -> Tensor:
    """The boolean (B or 1, 1, T, T) mask of the rule above (True = may attend)."""
    # Boolean comparisons only: an int64 (T, T) distance matrix would be 8 bytes per
    # entry (512 MiB at T = 8,192) on the way to a 1-byte mask.
    query = torch.arange(length, device=device)[:, None]
    key = torch.arange(length, device=device)[None, :]
    allowed = key <= query
    if span is not None:
        allowed = allowed & (key > query - span)
    allowed = allowed[None, None]
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, None, :, None] == doc_ids[:, None, None, :])
    return allowed


class LazyAttentionMask(Tensor):
    """A causal / span / document mask that is materialised only when read as values."""

    doc_ids: Tensor | None
    span: int | None
    _dense: Tensor | None

    @staticmethod
    def __new__(
        cls,
        length: int,
        doc_ids: Tensor | None = None,
        span: int | None = None,
        device: torch.device | str | None = None,
    ) -> LazyAttentionMask:
        device = doc_ids.device if doc_ids is not None else device
        batch = 1 if doc_ids is None else doc_ids.shape[0]
        placeholder = torch.zeros((), dtype=torch.bool, device=device)
        mask = Tensor._make_subclass(cls, placeholder.expand(batch, 1, length, length))
        mask.doc_ids = doc_ids
        mask.span = span
        mask._dense = None
        return mask

    def __init__(self, *args, **kwargs) -> None:  # the state is set in __new__
        super().__init__()

    @property
    def length(self) -> int:
        return int(self.shape[-1])

    def dense(self) -> Tensor:
        """The plain boolean mask (built once, then kept)."""
        if self._dense is None:
            self._dense = dense_attention_mask(self.length, self.doc_ids, self.span, self.device)
        return self._dense

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _METADATA:
            args, kwargs = tree_map(_materialise, (args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    def __repr__(self, *, tensor_contents=None) -> str:
        return (
            f"LazyAttentionMask(length={self.length}, batch={self.shape[0]}, "
            f"span={self.span}, documents={self.doc_ids is not None})"
        )


def _materialise(value):
    return value.dense() if isinstance(value, LazyAttentionMask) else value
