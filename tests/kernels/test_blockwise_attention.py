"""Block-wise attention (per document segment, per window block) against the dense
reference: outputs and q/k/v gradients in fp32, with and without documents and spans,
odd lengths, many short documents, one long one; Hypothesis over random segmentations.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.kernels.blockwise_attention import (
    blockwise_attention,
    bucket_length,
    document_segments,
    is_run_layout,
)
from seqlm.kernels.windowed_attention import windowed_attention_reference

FP32 = {"rtol": 1e-5, "atol": 2e-5}


def make_qkv(batch, heads, length, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, width, generator=generator) for _ in range(3)]


def runs(lengths_per_row):
    """doc_ids rows from segment lengths: [[3, 2]] -> [[0, 0, 0, 1, 1]]."""
    rows = [torch.repeat_interleave(torch.arange(len(r)), torch.tensor(r)) for r in lengths_per_row]
    return torch.stack(rows)


def output_and_grads(attention, q, k, v, *args):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = attention(*leaves, *args)
    cotangent = torch.linspace(-1, 1, out.numel()).view(out.shape)
    out.backward(cotangent)
    return [out.detach(), *(leaf.grad for leaf in leaves)]


def assert_matches_reference(q, k, v, window, docs):
    expected = output_and_grads(windowed_attention_reference, q, k, v, window, docs)
    got = output_and_grads(blockwise_attention, q, k, v, window, docs)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected, strict=True):
        torch.testing.assert_close(a, b, **FP32, msg=lambda m, n=name: f"{n}: {m}")


LAYOUTS = {
    "one long document": [[301]],
    "many short documents": [[1] * 40 + [2] * 30 + [3] * 27 + [5, 7, 9, 11, 13, 17]],
    "odd lengths, two rows": [[5, 97, 1, 33, 67], [203]],
    "a long one among short ones": [[3, 250, 4, 1, 45]],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("window", [None, 1, 6, 64, 129, 1000])
def test_documents_and_windows_match_reference(layout, window):
    docs = runs(LAYOUTS[layout])
    q, k, v = make_qkv(docs.shape[0], 2, docs.shape[1], 16)
    assert_matches_reference(q, k, v, window, docs)


@pytest.mark.parametrize("length", [1, 2, 127, 128, 129, 1001])
@pytest.mark.parametrize("window", [None, 1, 3, 128, 200])
def test_window_without_documents_matches_reference(length, window):
    q, k, v = make_qkv(3, 2, length, 8, seed=length)
    assert_matches_reference(q, k, v, window, None)


def test_custom_scale_is_used():
    docs = runs([[10, 20]])
    q, k, v = make_qkv(1, 1, 30, 4)
    expected = windowed_attention_reference(q, k, v, None, docs, scale=0.3)
    got = blockwise_attention(q, k, v, None, docs, scale=0.3)
    torch.testing.assert_close(got, expected, **FP32)


def test_window_path_takes_ids_that_are_not_runs():
    docs = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 2, 2, 0] * 20])
    assert not is_run_layout(docs)
    q, k, v = make_qkv(1, 2, docs.shape[1], 8)
    assert_matches_reference(q, k, v, 5, docs)
    with pytest.raises(ValueError, match="contiguous runs"):
        blockwise_attention(q, k, v, None, docs)


def test_segments_and_buckets():
    starts, lengths = document_segments(runs([[2, 3], [5]]))
    assert starts.tolist() == [0, 2, 5]
    assert lengths.tolist() == [2, 3, 5]
    assert [bucket_length(n) for n in (1, 8, 9, 15, 16, 17, 100, 1000)] == [
        8,
        8,
        10,
        16,
        16,
        20,
        112,
        1024,
    ]
    for n in range(1, 5000, 37):
        assert n <= bucket_length(n) <= max(8, n + n // 4)


@settings(max_examples=40, deadline=None)
@given(
    segments=st.lists(
        st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=12),
        min_size=1,
        max_size=3,
    ),
    window=st.one_of(st.none(), st.integers(min_value=1, max_value=80)),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_random_segmentations_match_reference(segments, window, seed):
    # Rows of a batch have one length: the last segment of each row takes up the slack.
    length = max(sum(row) for row in segments)
    rows = [row[:-1] + [row[-1] + length - sum(row)] for row in segments]
    docs = runs(rows)
    q, k, v = make_qkv(docs.shape[0], 2, length, 4, seed=seed)
    assert_matches_reference(q, k, v, window, docs)
