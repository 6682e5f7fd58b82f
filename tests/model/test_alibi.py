"""ALiBi positions: the slopes, the attention op against an explicit softmax of
QK^T / sqrt(d) + bias (outputs and gradients), document and span masks, the GPT's
forward, context extension and the config round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.model_helpers import randomized, tiny_config

from seqlm.model import GPT, GPTConfig, attention_mask
from seqlm.model.attention import CausalSelfAttention, attention_weights
from seqlm.model.positions import alibi_mask, alibi_slopes, extend_context


def paper_slopes(n: int) -> list[float]:
    """The ALiBi paper's get_slopes, written out again (its repository's recursion)."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("heads", [1, 2, 3, 4, 6, 8, 12, 16])
def test_slopes_are_the_papers(heads: int) -> None:
    torch.testing.assert_close(alibi_slopes(heads), torch.tensor(paper_slopes(heads)))
    if heads == 8:  # 1/2, 1/4, ..., 1/256: m_h = 2^(-8h/H)
        assert alibi_slopes(8).tolist() == [2.0**-h for h in range(1, 9)]


def reference_attention(q, k, v, slopes, allowed):
    """softmax(q k^T / sqrt(d) - m_h (i - j)) v, masked by `allowed` (B, 1, T, T), by
    explicit loops over heads, queries and keys."""
    batch, heads, length, dim = q.shape
    scores = torch.full((batch, heads, length, length), float("-inf"), dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                for j in range(length):
                    if allowed[b if allowed.shape[0] > 1 else 0, 0, i, j]:
                        dot = (q[b, h, i] * k[b, h, j]).sum() / math.sqrt(dim)
                        scores[b, h, i, j] = dot - slopes[h] * (i - j)
    return torch.softmax(scores, dim=-1) @ v, torch.softmax(scores, dim=-1)


@pytest.mark.parametrize(
    ("docs", "span"),
    [(None, None), (None, 3), ([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 2, 2, 2]], 2)],
)
def test_the_op_matches_an_explicit_softmax_outputs_and_gradients(docs, span) -> None:
    torch.manual_seed(0)
    attention = CausalSelfAttention(16, 4, bias=True, dropout=0.0, layer_index=0).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    doc_ids = None if docs is None else torch.tensor(docs)
    allowed = attention_mask(7, doc_ids=doc_ids, span=span)
    allowed = torch.ones(1, 1, 7, 7, dtype=torch.bool).tril() if allowed is None else allowed
    slopes = alibi_slopes(4).double()
    mask = alibi_mask(allowed.dense() if hasattr(allowed, "dense") else allowed, slopes, 0, 7)
    out = attention(x, None, mask)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    ours_grad = x.grad.clone()
    x.grad = None
    q, k, v = attention.project(x)
    y, weights = reference_attention(q, k, v, slopes, allowed)
    expected = attention.proj(y.transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    (expected * grad_out).sum().backward()
    torch.testing.assert_close(ours_grad, x.grad, atol=1e-12, rtol=0)
    # attention_weights adds the float mask the same way (what analysis recomputes)
    torch.testing.assert_close(attention_weights(q, k, mask), weights, atol=1e-12, rtol=0)


def test_mask_rows_start_at_the_cached_length() -> None:
    slopes = torch.tensor([0.5, 0.25])
    full = alibi_mask(None, slopes, 0, 6)
    tail = alibi_mask(None, slopes, 4, 2)  # queries 4, 5 over keys 0..5
    torch.testing.assert_close(tail, full[:, :, 4:])
    assert full[0, 0, 5, 2] == -0.5 * 3 and full[0, 1, 5, 5] == 0.0
    assert torch.isinf(full[0, :, 2, 3]).all()


def test_the_gpt_with_alibi_is_the_reference_and_has_no_position_weights() -> None:
    config = tiny_config(positions="alibi", n_layer=2)
    model = randomized(config, seed=3)
    assert model.position_embedding is None and model.rotary is None
    assert not any("alibi" in name for name in model.state_dict())  # nothing saved
    learned = GPT(tiny_config(n_layer=2))
    assert model.num_parameters() == learned.num_parameters() - 8 * 8  # no table
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    doc_ids = torch.tensor([[0] * 3 + [1] * 5, [0] * 8])
    # documents: a packed row equals each document run alone (distances restart nowhere
    # but the other document's keys are hidden, so its first token sees only itself)
    packed = model(idx, doc_ids=doc_ids).logits
    torch.testing.assert_close(packed[0, 3:], model(idx[:1, 3:]).logits[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(packed[0, :3], model(idx[:1, :3]).logits[0], atol=1e-10, rtol=0)
    # the bias matters: the same weights with slopes 0 give other logits
    plain = model(idx).logits
    model.alibi_slopes.zero_()
    assert (model(idx).logits - plain).abs().max() > 1e-3


def test_alibi_trains_and_extends_past_its_block_size() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config(positions="alibi", block_size=8, dropout=0.1))
    idx = torch.randint(0, 11, (3, 8))
    loss = model(idx, idx).loss
    loss.backward()
    assert torch.isfinite(loss) and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert extend_context(model.eval(), 32) == 1.0 and model.config.block_size == 32
    longer = torch.randint(0, 11, (1, 30))
    out = model(longer).logits
    # extension changes nothing on the first 8 tokens
    torch.testing.assert_close(out[:, :8], model(longer[:, :8]).logits, atol=1e-5, rtol=0)


def test_config_round_trip_and_bad_value() -> None:
    config = tiny_config(positions="alibi")
    again = GPTConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.positions == "alibi"
    with pytest.raises(Exception, match="positions"):
        tiny_config(positions="alibi2")
