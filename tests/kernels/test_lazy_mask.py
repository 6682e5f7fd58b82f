"""LazyAttentionMask: a (B, 1, T, T) mask that stores only its rule until read."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqlm.kernels.lazy_mask import LazyAttentionMask, dense_attention_mask
from seqlm.kernels.windowed_attention import windowed_causal_mask

DOCS = torch.tensor([[0, 0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 2, 2, 2]])


@pytest.mark.parametrize("span", [None, 1, 3])
@pytest.mark.parametrize("docs", [None, DOCS])
def test_dense_form_is_the_window_and_document_rule(span, docs):
    mask = LazyAttentionMask(7, docs, span, "cpu")
    assert torch.equal(mask, windowed_causal_mask(7, span, docs, "cpu"))
    assert torch.equal(mask.dense(), dense_attention_mask(7, docs, span, "cpu"))


def test_shape_queries_do_not_build_the_square():
    docs = torch.zeros(2, 4096, dtype=torch.long)
    mask = LazyAttentionMask(4096, docs, None)
    assert tuple(mask.shape) == (2, 1, 4096, 4096)
    assert mask.dtype == torch.bool and mask.device.type == "cpu" and mask.dim() == 4
    assert mask.size(-1) == 4096 and mask.ndim == 4 and mask.numel() == 2 * 4096**2
    assert "LazyAttentionMask(length=4096, batch=2" in repr(mask)
    assert mask._dense is None  # none of the above built it


def test_reads_see_the_dense_mask_and_return_plain_tensors():
    mask = LazyAttentionMask(7, DOCS, 2)
    dense = dense_attention_mask(7, DOCS, 2, "cpu")
    rows = mask[..., 2:5, :]
    assert type(rows) is torch.Tensor
    assert torch.equal(rows, dense[..., 2:5, :])
    assert torch.equal(~mask, ~dense)
    assert torch.equal(mask[1, 0], dense[1, 0])
    q = torch.randn(2, 3, 7, 4)
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask),
        F.scaled_dot_product_attention(q, q, q, attn_mask=dense),
    )
