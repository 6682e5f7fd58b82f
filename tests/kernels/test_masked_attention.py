"""The dispatcher's block-wise path and the model's attention call (`masked_attention`):
auto choices on CPU, errors, and a GPT whose lazy mask gives the dense model's loss and
gradients."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

import seqlm.model.gpt as gpt_module
from seqlm.errors import ConfigError
from seqlm.kernels.lazy_mask import LazyAttentionMask, dense_attention_mask
from seqlm.kernels.windowed_attention import (
    BLOCKWISE_MIN_LENGTH,
    blockwise_pays,
    masked_attention,
    windowed_attention,
    windowed_attention_reference,
)
from seqlm.model import GPT, attention_mask, preset
from seqlm.model.positions import document_positions
from seqlm.training.efficient.long_context_memory import long_context_memory

wa = importlib.import_module("seqlm.kernels.windowed_attention")


def packed(batch, length, every, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, length, generator=generator) < 1 / every).cumsum(dim=1)


def qkv(batch, heads, length, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, width, generator=generator) for _ in range(3)]


def test_auto_takes_blockwise_for_long_packed_rows_only():
    long_docs = packed(1, BLOCKWISE_MIN_LENGTH, 100)
    assert blockwise_pays(BLOCKWISE_MIN_LENGTH, None, long_docs)
    assert blockwise_pays(BLOCKWISE_MIN_LENGTH, 64, None)
    assert not blockwise_pays(BLOCKWISE_MIN_LENGTH - 1, None, long_docs[:, :-1])
    assert not blockwise_pays(4096, None, None)  # plain causal: one fused call
    assert not blockwise_pays(4096, 4096, None)
    reused = torch.tensor([[0, 1, 0] * 400])  # ids that are not contiguous runs
    assert not blockwise_pays(1200, None, reused)


def test_auto_result_on_cpu_is_exact(monkeypatch):
    calls = []
    monkeypatch.setattr(wa, "blockwise_attention", lambda *a, **k: calls.append(1) or ref(*a))

    def ref(q, k, v, window, docs):
        return windowed_attention_reference(q, k, v, window, docs)

    docs = packed(1, 1100, 50)
    q, k, v = qkv(1, 2, 1100, 8)
    windowed_attention(q, k, v, None, docs)
    assert calls == [1]
    windowed_attention(q[:, :, :100], k[:, :, :100], v[:, :, :100], None, docs[:, :100])
    assert calls == [1]  # short rows keep one fused SDPA call with the mask


@pytest.mark.parametrize("window", [None, 5, 300])
def test_explicit_blockwise_matches_reference(window):
    docs = packed(2, 300, 40)
    q, k, v = qkv(2, 3, 300, 8)
    torch.testing.assert_close(
        windowed_attention(q, k, v, window, docs, impl="blockwise"),
        windowed_attention_reference(q, k, v, window, docs),
        rtol=1e-5,
        atol=1e-5,
    )


def test_blockwise_refuses_documents_that_are_not_runs():
    q, k, v = qkv(1, 1, 6, 4)
    with pytest.raises(ConfigError, match="contiguous runs"):
        windowed_attention(q, k, v, None, torch.tensor([[0, 1, 0, 1, 0, 1]]), impl="blockwise")


def test_dropout_is_refused_on_paths_without_it():
    q, k, v = qkv(1, 1, 6, 4)
    with pytest.raises(ConfigError, match="no dropout"):
        windowed_attention(q, k, v, 2, impl="reference", dropout_p=0.1)


def test_masked_attention_takes_none_dense_and_lazy_masks():
    docs = packed(2, 1500, 200)
    q, k, v = qkv(2, 2, 1500, 8)
    lazy = LazyAttentionMask(1500, docs, 700)
    dense = dense_attention_mask(1500, docs, 700, "cpu")
    expected = windowed_attention_reference(q, k, v, 700, docs)
    for mask in (lazy, dense):
        torch.testing.assert_close(masked_attention(q, k, v, mask), expected, rtol=1e-5, atol=1e-5)
    assert lazy._dense is None  # the block-wise path never built the square
    causal = windowed_attention_reference(q, k, v, None, None)
    torch.testing.assert_close(masked_attention(q, k, v, None), causal, rtol=1e-5, atol=1e-5)


def test_model_mask_is_lazy():
    docs = packed(1, 64, 8)
    assert isinstance(attention_mask(64, doc_ids=docs), LazyAttentionMask)
    assert attention_mask(64) is None


@pytest.mark.parametrize(
    ("span", "checkpoint"), [(None, False), (96, False), (None, True), (None, "sublayers")]
)
def test_gpt_loss_and_gradients_match_the_dense_mask_model(monkeypatch, span, checkpoint):
    length = 1536
    config = preset(
        "micro",
        vocab_size=50,
        block_size=length,
        n_layer=2,
        n_head=2,
        n_embd=32,
        positions="rotary",
        dropout=0.0,
        attention_span=span,
    )
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 50, (2, length), generator=generator)
    docs = packed(2, length, 300)
    kwargs = {"doc_ids": docs, "position_ids": document_positions(docs)}

    def loss_and_grads():
        torch.manual_seed(0)
        model = GPT(config)
        # The long-context options apply to both paths (lean MLP, activation
        # checkpointing of blocks or sublayers, the loss without logits), as
        # bench_train.py --long compares them.
        with (
            long_context_memory(model, checkpoint=True) if checkpoint else contextlib.nullcontext()
        ):
            loss = model(idx, idx, **kwargs, return_logits=False).loss
            loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    lazy_loss, lazy_grads = loss_and_grads()
    monkeypatch.setattr(
        gpt_module,
        "attention_mask",
        lambda seq_len, *, doc_ids=None, span=None, device=None: dense_attention_mask(
            seq_len, doc_ids, span, device
        ),
    )
    dense_loss, dense_grads = loss_and_grads()
    torch.testing.assert_close(lazy_loss, dense_loss, rtol=0, atol=1e-5)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(lazy_grads[name], grad, rtol=1e-4, atol=1e-4, msg=name)
