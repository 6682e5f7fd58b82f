"""Attention statistics: chunked and LSE/value-channel (flex) paths against the dense
reference, and the reference against hand-computed cases.

Tolerance: 1e-5 absolute for masses, entropies and normalised entropies; 1e-4 for
distances (token units, up to a few hundred, from fp32 position channels).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.kernels.attention_stats import (
    AttentionStatistics,
    attention_statistics,
    attention_statistics_chunked,
    attention_statistics_flex,
    attention_statistics_reference,
)

EDGES = (0, 1, 2, 4, 8, 16, 32, 64)
BEYOND = (0, 3, 10, 100)
FIELDS = (
    "distance_histogram",
    "mean_distance",
    "entropy",
    "normalized_entropy",
    "mass_beyond",
)


def make_qk(batch, heads, length, width, seed=0, sharpness=1.5):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, length, width, generator=generator) * sharpness for _ in range(2)
    ]


def packed_documents(batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, length, generator=generator) < 0.04).cumsum(dim=1)


def assert_same_statistics(got: AttentionStatistics, expected: AttentionStatistics):
    assert got.queries == expected.queries
    assert got.normalizable_queries == expected.normalizable_queries
    assert got.uniform_mean_distance == pytest.approx(expected.uniform_mean_distance)
    for name in FIELDS:
        tolerance = 1e-4 if name == "mean_distance" else 1e-5
        torch.testing.assert_close(
            getattr(got, name), getattr(expected, name), rtol=0, atol=tolerance, msg=name
        )


@pytest.mark.parametrize(("batch", "heads", "length", "width"), [(2, 3, 64, 8), (5, 2, 123, 16)])
@pytest.mark.parametrize("window", [None, 20])
@pytest.mark.parametrize("with_docs", [False, True])
def test_chunked_matches_reference(batch, heads, length, width, window, with_docs):
    q, k = make_qk(batch, heads, length, width)
    docs = packed_documents(batch, length) if with_docs else None
    query_mask = torch.ones(batch, length, dtype=torch.bool)
    query_mask[:, 0] = False  # BOS does not count
    query_mask[-1, -5:] = False  # nor does padding
    kwargs = dict(
        distance_edges=EDGES,
        beyond_distances=BEYOND,
        window=window,
        doc_ids=docs,
        query_mask=query_mask,
    )
    expected = attention_statistics_reference(q, k, **kwargs)
    assert expected.queries == batch * length - batch - 5
    assert_same_statistics(attention_statistics_chunked(q, k, chunk_queries=17, **kwargs), expected)


@pytest.mark.parametrize(("window", "with_docs"), [(None, False), (20, True)])
def test_flex_identities_match_reference(window, with_docs):
    """The LSE / value-channel arithmetic, run by eager FlexAttention on CPU.

    Eager FlexAttention builds each block mask slowly on CPU, so few bins here; the
    compiled path is checked on CUDA below.
    """
    q, k = make_qk(2, 2, 70, 8, seed=1)
    docs = packed_documents(2, 70, seed=1) if with_docs else None
    query_mask = torch.rand(2, 70, generator=torch.Generator().manual_seed(1)) > 0.2
    kwargs = dict(
        distance_edges=(0, 1, 8),
        beyond_distances=(3,),
        window=window,
        doc_ids=docs,
        query_mask=query_mask,
    )
    expected = attention_statistics_reference(q, k, **kwargs)
    assert_same_statistics(attention_statistics_flex(q, k, compiled=False, **kwargs), expected)


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(1, 40),
    heads=st.integers(1, 3),
    window=st.one_of(st.none(), st.integers(1, 50)),
    edges=st.lists(st.integers(1, 60), max_size=5, unique=True).map(lambda e: (0, *sorted(e))),
    beyond=st.lists(st.integers(0, 60), max_size=3).map(tuple),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_chunked_matches_reference_on_any_layout(length, heads, window, edges, beyond, chunk, seed):
    q, k = make_qk(2, heads, length, 4, seed=seed)
    docs = packed_documents(2, length, seed=seed)
    kwargs = dict(distance_edges=edges, beyond_distances=beyond, window=window, doc_ids=docs)
    expected = attention_statistics_reference(q, k, **kwargs)
    assert_same_statistics(
        attention_statistics_chunked(q, k, chunk_queries=chunk, **kwargs), expected
    )


def test_uniform_attention_by_hand():
    """Zero queries give uniform attention over the n visible keys."""
    length = 6
    q = torch.zeros(1, 1, length, 4)
    k = torch.randn(1, 1, length, 4)
    stats = attention_statistics_chunked(
        q, k, distance_edges=(0, 1, 3), beyond_distances=(0, 2), chunk_queries=4
    )
    counts = torch.arange(1, length + 1, dtype=torch.float64)
    # query i sees i + 1 keys at distances 0..i, each with mass 1/(i+1)
    assert stats.queries == length
    assert stats.uniform_mean_distance == pytest.approx(float(((counts - 1) / 2).mean()))
    torch.testing.assert_close(
        stats.mean_distance, torch.tensor([stats.uniform_mean_distance], dtype=torch.float64)
    )
    torch.testing.assert_close(stats.entropy, torch.log(counts).mean()[None])
    torch.testing.assert_close(stats.normalized_entropy, torch.ones(1, dtype=torch.float64))
    bin0 = (1 / counts).mean()
    bin1 = (torch.clamp(counts - 1, max=2) / counts).mean()
    bin2 = (torch.clamp(counts - 3, min=0) / counts).mean()
    torch.testing.assert_close(stats.distance_histogram, torch.stack([bin0, bin1, bin2])[None])
    beyond0 = ((counts - 1) / counts).mean()
    beyond2 = (torch.clamp(counts - 3, min=0) / counts).mean()
    torch.testing.assert_close(stats.mass_beyond, torch.stack([beyond0, beyond2])[None])


def test_sharp_attention_on_previous_token():
    """Scores that single out key i - 1 put all the mass at distance 1, entropy 0."""
    length, width = 10, 16
    keys = torch.eye(width)[:length] * 50
    queries = torch.zeros(length, width)
    queries[1:] = torch.eye(width)[: length - 1]  # query i matches key i - 1
    mask = torch.ones(1, length, dtype=torch.bool)
    mask[0, 0] = False  # the first token has no previous token
    stats = attention_statistics_reference(
        queries[None, None], keys[None, None], distance_edges=(0, 1, 2), query_mask=mask, scale=1.0
    )
    torch.testing.assert_close(
        stats.distance_histogram, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(stats.mean_distance, torch.tensor([1.0], dtype=torch.float64))
    assert float(stats.entropy) < 1e-12


def test_merge_equals_statistics_of_the_whole_batch():
    q, k = make_qk(4, 2, 40, 8, seed=2)
    whole = attention_statistics_chunked(q, k)
    parts = attention_statistics_chunked(q[:1], k[:1]).merge(
        attention_statistics_chunked(q[1:], k[1:])
    )
    assert_same_statistics(parts, whole)
    other_bins = attention_statistics_chunked(q, k, distance_edges=(0, 5))
    with pytest.raises(ConfigError, match="cannot merge"):
        whole.merge(other_bins)


def test_histogram_sums_to_one_and_entropy_is_bounded():
    q, k = make_qk(2, 4, 200, 16, seed=4, sharpness=0.7)
    stats = attention_statistics(q, k)
    torch.testing.assert_close(stats.distance_histogram.sum(-1), torch.ones(4, dtype=torch.float64))
    assert bool((stats.normalized_entropy > 0).all() and (stats.normalized_entropy <= 1).all())
    # mass beyond a distance never grows with the distance
    assert bool((stats.mass_beyond[:, 1:] <= stats.mass_beyond[:, :-1] + 1e-9).all())


def test_progress_is_reported_per_chunk():
    class Recorder:
        def __init__(self):
            self.events = []

        def start(self, description, total=None):
            self.events.append(("start", total))

        def advance(self, amount=1):
            self.events.append(("advance", amount))

        def update(self, **fields):
            pass

        def finish(self):
            self.events.append(("finish", None))

    recorder = Recorder()
    q, k = make_qk(1, 1, 10, 4)
    attention_statistics_chunked(q, k, chunk_queries=4, progress=recorder)
    assert recorder.events == [
        ("start", 10),
        ("advance", 4),
        ("advance", 4),
        ("advance", 2),
        ("finish", None),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distance_edges": (1, 2)}, "must start at 0"),
        ({"distance_edges": (0, 4, 4)}, "increase"),
        ({"beyond_distances": (-1,)}, ">= 0"),
        ({"query_mask": torch.ones(3, 3, dtype=torch.bool)}, "query_mask"),
        ({"window": 0}, "window must be >= 1"),
        ({"impl": "dense"}, "unknown implementation"),
        ({"impl": "flex"}, "FlexAttention needs a CUDA device"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs, message):
    q, k = make_qk(1, 2, 8, 4)
    with pytest.raises(ConfigError, match=message):
        attention_statistics(q, k, **kwargs)


def test_uniform_baseline_uses_document_starts_and_window():
    q, k = make_qk(1, 1, 8, 4)
    docs = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    stats = attention_statistics_chunked(q, k, doc_ids=docs, window=3)
    visible = torch.tensor([1, 2, 3, 1, 2, 3, 3, 3], dtype=torch.float64)
    assert stats.uniform_mean_distance == pytest.approx(float(((visible - 1) / 2).mean()))
    assert stats.normalizable_queries == 6
    assert math.isfinite(float(stats.normalized_entropy))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("window", [None, 64])
@pytest.mark.parametrize("with_docs", [False, True])
def test_compiled_flex_matches_reference_on_cuda(window, with_docs):
    q, k = (t.cuda() for t in make_qk(2, 4, 1024, 64, sharpness=0.5))
    docs = packed_documents(2, 1024).cuda() if with_docs else None
    kwargs = dict(distance_edges=EDGES, beyond_distances=BEYOND, window=window, doc_ids=docs)
    expected = attention_statistics_reference(q, k, **kwargs)
    got = attention_statistics(q, k, impl="flex", **kwargs)
    assert_same_statistics(got, expected)
