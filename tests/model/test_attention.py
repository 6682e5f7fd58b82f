"""Masks against explicit dense masks, the attention module against eager attention,
and its q, k, v projection (what attention capture records)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.model.attention import (
    CausalSelfAttention,
    attention_mask,
    attention_weights,
    causal_mask,
)


def dense_mask(doc_ids: list[list[int]] | None, seq_len: int, span: int | None) -> torch.Tensor:
    """The rule written out element by element: causal, within span, same document."""
    rows = doc_ids if doc_ids is not None else [[0] * seq_len]
    out = torch.zeros(len(rows), 1, seq_len, seq_len, dtype=torch.bool)
    for b, docs in enumerate(rows):
        for i in range(seq_len):
            for j in range(seq_len):
                ok = j <= i
                if span is not None:
                    ok = ok and j > i - span
                ok = ok and docs[i] == docs[j]
                out[b, 0, i, j] = ok
    return out


def test_no_mask_needed_without_docs_or_span() -> None:
    assert attention_mask(7) is None
    assert attention_mask(7, span=7) is None  # a span covering the row is plain causal
    assert attention_mask(7, span=100) is None


@pytest.mark.parametrize("span", [1, 2, 5])
def test_span_mask_matches_dense(span: int) -> None:
    mask = attention_mask(9, span=span)
    assert mask.shape == (1, 1, 9, 9)
    assert torch.equal(mask, dense_mask(None, 9, span))
    # every query sees exactly min(i + 1, span) keys
    assert mask[0, 0].sum(dim=1).tolist() == [min(i + 1, span) for i in range(9)]


def test_document_mask_matches_dense() -> None:
    docs = [[0, 0, 0, 1, 1, 2, 2, 2], [3, 3, 3, 3, 3, 3, 3, 3], [0, 1, 1, 2, 2, 2, 3, 3]]
    mask = attention_mask(8, doc_ids=torch.tensor(docs))
    assert mask.shape == (3, 1, 8, 8)
    assert torch.equal(mask, dense_mask(docs, 8, None))


def test_document_and_span_mask_matches_dense() -> None:
    docs = [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1, 2, 2, 2]]
    mask = attention_mask(10, doc_ids=torch.tensor(docs), span=3)
    assert torch.equal(mask, dense_mask(docs, 10, 3))


@given(
    st.integers(1, 12).flatmap(
        lambda t: st.tuples(
            st.just(t),
            st.lists(st.lists(st.integers(0, 3), min_size=t, max_size=t), min_size=1, max_size=3),
            st.one_of(st.none(), st.integers(1, 14)),
        )
    )
)
@settings(max_examples=60, deadline=None)
def test_masks_match_dense_on_random_layouts(case) -> None:
    seq_len, docs, span = case
    mask = attention_mask(seq_len, doc_ids=torch.tensor(docs), span=span)
    assert torch.equal(mask, dense_mask(docs, seq_len, span))
    assert mask.diagonal(dim1=-2, dim2=-1).all()  # no row is ever empty


def test_causal_mask_is_lower_triangle() -> None:
    assert torch.equal(causal_mask(5), dense_mask(None, 5, None))


def eager_attention(q, k, v, mask) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize(
    ("docs", "span"),
    [
        (None, None),
        (None, 3),
        ([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 2, 2, 2]], None),
        ([[0, 0, 1, 1, 1, 1, 1]] * 2, 2),
    ],
)
def test_attention_module_matches_eager_with_dense_mask(docs, span) -> None:
    torch.manual_seed(0)
    attention = CausalSelfAttention(16, 4, bias=True, dropout=0.0, layer_index=0).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    doc_ids = torch.tensor(docs) if docs is not None else None
    out = attention(x, None, attention_mask(7, doc_ids=doc_ids, span=span))
    q, k, v = attention.qkv(x).split(16, dim=2)
    q, k, v = (z.view(2, 7, 4, 4).transpose(1, 2) for z in (q, k, v))
    y = eager_attention(q, k, v, dense_mask(docs, 7, span))
    expected = attention.proj(y.transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_projected_qkv_and_causal_mask_reproduce_the_output() -> None:
    """What attention capture records (`project`'s q, k, v and the causal mask) gives the
    module's output back through the eager weights."""
    torch.manual_seed(1)
    attention = CausalSelfAttention(16, 2, bias=False, dropout=0.0, layer_index=3)
    x = torch.randn(2, 6, 16)
    out = attention(x)
    q, k, v = attention.project(x)
    assert q.shape == (2, 2, 6, 8)
    weights = attention_weights(q, k, causal_mask(6))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 6))
    y = (weights @ v).transpose(1, 2).reshape(2, 6, 16)
    torch.testing.assert_close(attention.proj(y), out, atol=1e-6, rtol=0)


def test_attention_weights_in_query_chunks_equal_the_full_map() -> None:
    torch.manual_seed(2)
    q, k = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4)
    mask = attention_mask(10, span=4)
    full = attention_weights(q, k, mask)
    chunks = [
        attention_weights(q, k, mask, query_start=s, query_stop=s + 3) for s in range(0, 10, 3)
    ]
    torch.testing.assert_close(torch.cat(chunks, dim=2), full)
    assert (full[..., 9, :6] == 0).all()  # outside the span
