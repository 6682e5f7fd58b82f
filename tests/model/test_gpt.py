"""The GPT against a forward written out by hand, training on a pattern, its spans."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.model_helpers import randomized, tiny_config

from seqlm.errors import ConfigError
from seqlm.model import GPT, GPTConfig, document_positions
from seqlm.model.loss import register_loss_impl

PLACEMENTS_BY_HAND = {
    "pre": ["pre"] * 4,
    "post": ["post"] * 4,
    "peri": ["peri"] * 4,
    "mix": ["post", "pre", "pre", "pre"],  # int(0.25 * 4) = 1 Post-LN layer first
}


# ----- the forward written out with plain tensor ops -----


def hand_norm(x, sd, name, config):
    weight = sd[name + ".weight"]
    if config.norm == "layernorm":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + config.norm_eps) * weight
        return y + sd[name + ".bias"] if name + ".bias" in sd else y
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.norm_eps) * weight


def hand_linear(x, sd, name):
    y = x @ sd[name + ".weight"].T
    return y + sd[name + ".bias"] if name + ".bias" in sd else y


def hand_rotate(x, positions, base):
    """x (B, H, T, d); pairs (c, c + d/2) rotated by positions * base^(-2c/d)."""
    d = x.shape[-1]
    freqs = base ** (-2.0 * torch.arange(d // 2, dtype=torch.float64) / d)
    angle = positions.to(torch.float64)[:, None, :, None] * freqs
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], -1)


def hand_attention(x, sd, prefix, config, mask, positions):
    batch, seq_len, width = x.shape
    heads, d = config.n_head, config.head_dim
    w = sd[prefix + "qkv.weight"]
    bias = sd.get(prefix + "qkv.bias")
    parts = []
    for part in range(3):
        y = x @ w[part * width : (part + 1) * width].T
        if bias is not None:
            y = y + bias[part * width : (part + 1) * width]
        parts.append(y.view(batch, seq_len, heads, d).permute(0, 2, 1, 3))
    q, k, v = parts
    if config.positions == "rotary":
        q, k = (
            hand_rotate(q, positions, config.rope_base),
            hand_rotate(k, positions, config.rope_base),
        )
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    if config.positions == "alibi":  # m_h = 2^(-8h/H) (power-of-two H), bias -m_h (i - j)
        slopes = torch.tensor([2.0 ** (-8.0 * h / heads) for h in range(1, heads + 1)])
        distance = torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]
        scores = scores - slopes.double()[:, None, None] * distance
    scores = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
    y = torch.softmax(scores, dim=-1) @ v
    return hand_linear(y.permute(0, 2, 1, 3).reshape(batch, seq_len, width), sd, prefix + "proj")


def explicit_mask(seq_len, doc_ids, span):
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    keep = (j <= i) & ((j > i - span) if span is not None else True)
    keep = keep[None, None].expand(doc_ids.shape[0], 1, seq_len, seq_len)
    return keep & (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]


def hand_forward(model, idx, placements, *, doc_ids=None, positions=None, spans=None):
    config = model.config
    sd = model.state_dict()
    batch, seq_len = idx.shape
    if doc_ids is None:
        doc_ids = torch.zeros_like(idx)
    if positions is None:
        positions = torch.arange(seq_len).expand(batch, seq_len)
    spans = spans or [None] * len(placements)
    x = sd["token_embedding.weight"][idx]
    if config.positions == "learned":
        x = x + sd["position_embedding.embedding.weight"][positions]
    if placements[0] == "peri":  # Peri-LN normalizes the embedding output too
        x = hand_norm(x, sd, "embedding_norm", config)
    for i, placement in enumerate(placements):
        p = f"blocks.{i}."
        mask = explicit_mask(seq_len, doc_ids, spans[i])

        def attention(h, p=p, mask=mask):
            return hand_attention(h, sd, p + "attn.", config, mask, positions)

        def mlp(h, p=p):
            up = hand_linear(h, sd, p + "mlp.up")
            return hand_linear(0.5 * up * (1 + torch.erf(up / math.sqrt(2))), sd, p + "mlp.down")

        for name, sublayer in (("attn_norms", attention), ("mlp_norms", mlp)):
            inner, outer = p + name + ".inner", p + name + ".outer"
            if placement == "pre":
                x = x + sublayer(hand_norm(x, sd, inner, config))
            elif placement == "post":
                x = hand_norm(x + sublayer(x), sd, outer, config)
            else:
                x = x + hand_norm(sublayer(hand_norm(x, sd, inner, config)), sd, outer, config)
    if placements[-1] != "post":
        x = hand_norm(x, sd, "final_norm", config)
    head = sd["token_embedding.weight"] if config.tie_embeddings else sd["lm_head.weight"]
    return x @ head.T


@pytest.mark.parametrize("placement", ["pre", "post", "peri", "mix"])
@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_forward_matches_hand_computation(placement, positions, norm) -> None:
    config = tiny_config(norm_placement=placement, positions=positions, norm=norm)
    model = randomized(config)
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(2))
    out = model(idx, targets)
    expected = hand_forward(model, idx, PLACEMENTS_BY_HAND[placement])
    assert (out.logits - expected).abs().max().item() < 1e-6
    log_probs = expected - expected.logsumexp(-1, keepdim=True)
    hand_loss = -log_probs.gather(-1, targets[..., None]).mean()
    assert abs(out.loss.item() - hand_loss.item()) < 1e-6


@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi"])
def test_forward_with_documents_spans_and_untied_head_matches_hand(positions) -> None:
    config = tiny_config(
        positions=positions, layer_spans=[2, None, 3, 1], bias=False, tie_embeddings=False
    )
    model = randomized(config, seed=3)
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(4))
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2], [4, 4, 4, 4, 4, 5, 5, 5]])
    position_ids = document_positions(doc_ids)
    out = model(idx, doc_ids=doc_ids, position_ids=position_ids)
    expected = hand_forward(
        model, idx, ["pre"] * 4, doc_ids=doc_ids, positions=position_ids, spans=[2, None, 3, 1]
    )
    assert (out.logits - expected).abs().max().item() < 1e-6


def repeated_pattern_batch(batch: int = 8, seq_len: int = 16):
    pattern = torch.tensor([1, 5, 2, 7, 3, 9, 4])
    rows = []
    for b in range(batch):
        rows.append(pattern.roll(-b).repeat(4)[: seq_len + 1])
    data = torch.stack(rows)
    return data[:, :-1], data[:, 1:]


@pytest.mark.parametrize("placement", ["pre", "post", "peri", "mix"])
@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi"])
def test_each_variant_learns_a_repeated_pattern(placement, positions) -> None:
    torch.manual_seed(0)
    config = tiny_config(
        n_embd=16, block_size=16, norm_placement=placement, positions=positions, n_layer=4
    )
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = repeated_pattern_batch()
    first = None
    for _ in range(40):
        loss = model(x, y, return_logits=False).loss
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 2.0  # about ln(11) at init
    assert loss.item() < 0.25 * first


@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi"])
def test_packed_documents_give_the_same_logits_as_separate_runs(positions) -> None:
    model = randomized(tiny_config(positions=positions, n_embd=16), seed=5)
    first = torch.tensor([[1, 4, 4, 2, 9]])
    second = torch.tensor([[3, 7, 10]])
    packed = torch.cat([first, second], dim=1)
    doc_ids = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1]])
    logits = model(packed, doc_ids=doc_ids, position_ids=document_positions(doc_ids)).logits
    torch.testing.assert_close(logits[:, :5], model(first).logits, atol=1e-10, rtol=0)
    torch.testing.assert_close(logits[:, 5:], model(second).logits, atol=1e-10, rtol=0)
    # without the document mask the second document would see the first
    leaky = model(packed, position_ids=document_positions(doc_ids)).logits
    assert (leaky[:, 5:] - model(second).logits).abs().max() > 1e-3


def test_span_at_call_time_equals_a_model_built_with_it() -> None:
    config = tiny_config(n_embd=16)
    model = randomized(config, seed=6)
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(7))
    spanned = randomized(tiny_config(n_embd=16, attention_span=3), seed=6)
    torch.testing.assert_close(model(idx, attention_span=3).logits, spanned(idx).logits)
    per_layer = [1, None, 4, 2]
    spanned_layers = randomized(tiny_config(n_embd=16, layer_spans=per_layer), seed=6)
    torch.testing.assert_close(
        model(idx, attention_span=per_layer).logits, spanned_layers(idx).logits
    )
    # None at call time turns a configured span off; a span >= T changes nothing
    torch.testing.assert_close(spanned(idx, attention_span=None).logits, model(idx).logits)
    torch.testing.assert_close(model(idx, attention_span=8).logits, model(idx).logits)
    assert (model(idx, attention_span=2).logits - model(idx).logits).abs().max() > 1e-3
    with pytest.raises(ConfigError):
        model(idx, attention_span=[1, 2])
    with pytest.raises(ConfigError):
        model(idx, attention_span=0)
    with pytest.raises(ConfigError):
        model(idx, attention_span=3.5)
    # numpy integers (spans read from an experiment grid) are spans too
    torch.testing.assert_close(model(idx, attention_span=np.int64(3)).logits, spanned(idx).logits)


def test_set_attention_span_updates_model_and_config() -> None:
    model = randomized(tiny_config(n_embd=16), seed=8)
    reference = randomized(tiny_config(n_embd=16, attention_span=2), seed=8)
    idx = torch.randint(0, 11, (1, 8), generator=torch.Generator().manual_seed(9))
    model.set_attention_span(2)
    assert model.config.attention_span == 2 and model.attention_spans == [2] * 4
    torch.testing.assert_close(model(idx).logits, reference(idx).logits)
    model.set_attention_span([None, 1, None, 1])
    assert model.config.layer_spans == [None, 1, None, 1] and model.config.attention_span is None
    with pytest.raises(ConfigError):
        model.set_attention_span([1, 2, 3])


def test_tied_embeddings_share_storage() -> None:
    tied = GPT(tiny_config())
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert tied.output_weight.data_ptr() == tied.token_embedding.weight.data_ptr()
    untied = GPT(tiny_config(tie_embeddings=False))
    assert untied.lm_head.weight.data_ptr() != untied.token_embedding.weight.data_ptr()
    x, y = repeated_pattern_batch(2, 8)
    tied(x, y).loss.backward()
    # one tensor, one gradient, fed by both the lookup and the head
    assert tied.token_embedding.weight.grad is tied.lm_head.weight.grad


def test_all_parameters_receive_gradients() -> None:
    for config in (tiny_config(), tiny_config(norm_placement="peri", positions="rotary")):
        model = GPT(config)
        x, y = repeated_pattern_batch(2, 8)
        model(x, y).loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_loss_paths_agree_and_mask_weights_and_ignore_index() -> None:
    model = randomized(tiny_config(), seed=10)
    x, y = repeated_pattern_batch(3, 8)
    y = y.clone()
    y[0, :3] = -100
    with_logits = model(x, y)
    lean = model(x, y, return_logits=False)
    assert lean.logits is None
    torch.testing.assert_close(with_logits.loss, lean.loss)
    per_token = F.cross_entropy(with_logits.logits.reshape(-1, 11), y.reshape(-1), reduction="none")
    kept = (y.reshape(-1) != -100).double()
    torch.testing.assert_close(with_logits.loss, (per_token * kept).sum() / kept.sum())
    weights = torch.rand(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = (per_token * kept * weights.reshape(-1)).sum() / (kept * weights.reshape(-1)).sum()
    torch.testing.assert_close(model(x, y, loss_mask=weights).loss, expected)
    torch.testing.assert_close(model(x, y, loss_mask=weights, return_logits=False).loss, expected)
    assert model(x).loss is None


def test_loss_function_is_swappable() -> None:
    calls = []

    def half_loss(hidden, weight, targets, loss_mask):
        calls.append(hidden.shape)
        return 0.5 * F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten())

    register_loss_impl("test-half", half_loss)
    model = randomized(tiny_config(loss_impl="test-half"), seed=11)
    x, y = repeated_pattern_batch(2, 8)
    lean = model(x, y, return_logits=False).loss
    assert calls == [(2, 8, 8)]
    torch.testing.assert_close(lean, 0.5 * model(x, y).loss)
    hidden = model.hidden_states(x)
    torch.testing.assert_close(hidden @ model.output_weight.T, model(x).logits)
    with pytest.raises(ConfigError, match="no loss implementation named 'nope'"):
        GPT(tiny_config(loss_impl="nope"))


def test_dropout_only_in_training_mode() -> None:
    model = GPT(tiny_config(dropout=0.5))
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(18))
    model.eval()
    torch.testing.assert_close(model(idx).logits, model(idx).logits)
    model.train()
    assert (model(idx).logits - model(idx).logits).abs().max() > 0


def test_sequence_longer_than_block_size_is_a_config_error() -> None:
    model = GPT(tiny_config())
    with pytest.raises(ConfigError, match="exceeds the model's block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt2_initialisation_scales() -> None:
    torch.manual_seed(19)
    model = GPT(GPTConfig(vocab_size=64, n_layer=8, n_head=4, n_embd=128, block_size=16))
    qkv = torch.cat([b.attn.qkv.weight.flatten() for b in model.blocks])
    proj = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks])
    down = torch.cat([b.mlp.down.weight.flatten() for b in model.blocks])
    assert abs(qkv.std().item() - 0.02) < 0.001
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.0003
    assert abs(down.std().item() - 0.02 / math.sqrt(16)) < 0.0003
    assert all((b.attn.qkv.bias == 0).all() for b in model.blocks)


@pytest.mark.parametrize("name", ["chunked", "auto"])
def test_kernel_losses_plug_in_by_name(name: str) -> None:
    """seqlm.kernels registers its lean losses; by name they match the dense loss."""
    model = randomized(tiny_config(loss_impl=name), seed=20).float()
    x, y = repeated_pattern_batch(3, 8)
    y = y.clone()
    y[1, 2:5] = -100
    weights = torch.rand(3, 8, generator=torch.Generator().manual_seed(1))
    for mask in (None, weights):
        lean = model(x, y, loss_mask=mask, return_logits=False).loss
        dense = model(x, y, loss_mask=mask).loss
        torch.testing.assert_close(lean, dense, atol=1e-5, rtol=1e-5)
