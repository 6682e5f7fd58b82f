"""Part-shared token embeddings (`model.token_parts`): the map read from a real
vocabulary, the plain model unchanged, and the effective matrix against a hand-built one."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from helpers.clinical_run import mimic_demo_corpus

from seqlm.errors import ConfigError
from seqlm.export.hf import gpt2_state_dict
from seqlm.model import GPT, GPTConfig, parameter_count
from seqlm.model.token_parts import TokenPartMap, token_part_map

SHAPE = {"vocab_size": 40, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 12}


@pytest.fixture(scope="module")
def demo_vocabulary(tmp_path_factory):
    corpus = mimic_demo_corpus(tmp_path_factory.mktemp("parts") / "C")
    return corpus.vocabulary


def test_the_map_shares_a_labs_code_and_each_bin_across_labs(demo_vocabulary):
    vocab = demo_vocabulary
    parts = token_part_map(vocab)
    ids = vocab.token_to_id
    bins_of = defaultdict(dict)
    for token, entry in vocab.data_tokens.items():
        if entry.bin is not None:
            bins_of[entry.code][entry.bin] = ids[token]
    lab, bins = max(bins_of.items(), key=lambda item: len(item[1]))
    assert len(bins) >= 5
    # All bins of one lab: one code part, a different value part each.
    assert len({int(parts.code_ids[t]) for t in bins.values()}) == 1
    assert len({int(parts.value_ids[t]) for t in bins.values()}) == len(bins)
    # Bin k of two labs: the same value part, different code parts.
    other = next(c for c, b in bins_of.items() if c != lab and set(b) & set(bins))
    k = sorted(set(bins_of[other]) & set(bins))[0]
    a, b = bins[k], bins_of[other][k]
    assert parts.value_ids[a] == parts.value_ids[b]
    assert parts.code_ids[a] != parts.code_ids[b]
    # Specials, time gaps and value-less codes keep only their own row.
    for i, role in enumerate(vocab.roles):
        entry = vocab.data_tokens.get(vocab.tokens[i])
        fused = entry is not None and (entry.bin is not None or entry.text is not None)
        assert (parts.code_ids[i] > 0) == fused and (parts.value_ids[i] > 0) == fused, role
    assert parts.code_parts == int(parts.code_ids.max()) + 1
    assert parts.value_parts == int(parts.value_ids.max()) + 1


def random_parts(seed: int = 1) -> TokenPartMap:
    rng = np.random.default_rng(seed)
    code_ids = rng.integers(0, 5, SHAPE["vocab_size"])
    value_ids = np.where(code_ids > 0, rng.integers(1, 4, SHAPE["vocab_size"]), 0)
    return TokenPartMap(code_ids, value_ids, 5, 4)


def part_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SHAPE, token_parts=True, code_parts=5, value_parts=4, **overrides))
    model.set_token_parts(random_parts())
    return model


def test_parts_off_is_todays_model_and_fresh_parts_change_nothing():
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**SHAPE))
    assert not any("token_parts" in name for name in plain.state_dict())
    fresh = part_model()
    idx = torch.randint(0, SHAPE["vocab_size"], (3, 12))
    # Zero part tables and the same draws for every other weight: the same function.
    assert torch.equal(plain(idx).logits, fresh(idx).logits)
    assert torch.equal(plain(idx).logits, plain.lm_head(plain.hidden_states(idx)))
    own = {k: v for k, v in fresh.state_dict().items() if not k.startswith("token_parts.")}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in own.items())


def test_effective_matrix_outputs_and_gradients_match_a_hand_built_table():
    model = part_model()
    with torch.no_grad():
        model.token_parts.code.weight[1:].normal_()
        model.token_parts.value.weight[1:].normal_()
    parts = random_parts()
    tok = model.token_embedding.weight
    code, value = model.token_parts.code.weight, model.token_parts.value.weight
    by_hand = torch.stack(
        [
            tok[t] + code[int(parts.code_ids[t])] + value[int(parts.value_ids[t])]
            for t in range(SHAPE["vocab_size"])
        ]
    )
    # The reference: a plain model holding the hand-built table as its (tied) embedding.
    reference = GPT(GPTConfig(**SHAPE))
    reference.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("token_parts.")}
    )
    with torch.no_grad():
        reference.token_embedding.weight.copy_(by_hand)
    idx = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    targets = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    out, ref = model(idx, targets), reference(idx, targets)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(model.head_logits(model.hidden_states(idx)), ref.logits)
    lean = model(idx, targets, return_logits=False).loss
    torch.testing.assert_close(lean, out.loss)
    out.loss.backward()
    ref.loss.backward()
    grad = reference.token_embedding.weight.grad
    torch.testing.assert_close(model.token_embedding.weight.grad, grad)
    for table, ids in ((code, parts.code_ids), (value, parts.value_ids)):
        summed = torch.zeros_like(table)
        summed.index_add_(0, torch.as_tensor(ids), grad)
        summed[0] = 0  # the "none" row is never trained
        torch.testing.assert_close(table.grad, summed)


def test_counts_refusals_and_the_hf_fold():
    model = part_model()
    assert model.num_parameters() == parameter_count(model.config)
    assert model.num_parameters(exclude_embeddings=True) == parameter_count(
        model.config, exclude_embeddings=True
    )
    with pytest.raises(ConfigError, match="code_parts"):
        GPT(GPTConfig(**SHAPE, token_parts=True))
    with pytest.raises(ConfigError, match="token_parts"):
        GPT(GPTConfig(**SHAPE)).set_token_parts(random_parts())
    with torch.no_grad():
        model.token_parts.code.weight[1:].normal_()
    folded = gpt2_state_dict(model.state_dict(), model.config.to_dict())
    torch.testing.assert_close(folded["transformer.wte.weight"], model.embedding_matrix())


def test_the_bare_tied_head_is_refused_and_untied_parts_feed_the_input_only():
    model = part_model()
    hidden = model.hidden_states(torch.randint(0, SHAPE["vocab_size"], (2, 6)))
    with pytest.raises(ConfigError, match="call GPT.head_logits"):
        model.lm_head(hidden)
    untied = part_model(tie_embeddings=False)
    with torch.no_grad():
        untied.token_parts.code.weight[1:].normal_()
    idx = torch.randint(0, SHAPE["vocab_size"], (2, 6))
    hidden = untied.hidden_states(idx)
    # Untied, the head is its own matrix (parts are input rows only), so lm_head is it.
    torch.testing.assert_close(untied.head_logits(hidden), untied.lm_head(hidden))
    torch.testing.assert_close(untied(idx).logits, untied.lm_head(hidden))
    assert not torch.equal(untied.embedding_matrix(), untied.token_embedding.weight)
    assert untied.output_weight is untied.lm_head.weight
