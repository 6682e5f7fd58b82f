"""Recomputed attention equals a dense reference, for every layer and head and mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.analysis_helpers import (  # noqa: F401 (autouse fixture)
    dense_reference_attention,
    event_corpus,
    random_gpt,
)

from seqlm.analysis.attention_capture import (
    capture_attention,
    capture_attention_inputs,
    check_model_fits_corpus,
    corpus_window,
    sequence_windows,
)
from seqlm.errors import ConfigError, CorpusError
from seqlm.model import GPT, GPTConfig, document_positions

VARIANTS = {
    "learned, causal": {},
    "rotary, span 5": {"positions": "rotary", "attention_span": 5},
    "per-layer spans": {"layer_spans": [3, None]},
    "rmsnorm post-LN rotary": {"positions": "rotary", "norm": "rmsnorm", "norm_placement": "post"},
    "alibi, causal": {"positions": "alibi"},
    "alibi, per-layer spans": {"positions": "alibi", "layer_spans": [4, None]},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_recomputed_weights_equal_the_dense_reference(variant: str) -> None:
    model = random_gpt(seed=1, **VARIANTS[variant])
    ids = torch.randint(5, 40, (2, 23), generator=torch.Generator().manual_seed(0))
    reference, _ = dense_reference_attention(model, ids)
    inputs = capture_attention_inputs(model, ids)
    for layer in range(model.config.n_layer):
        for row in range(2):
            ours = inputs.weights(layer, row=row, chunk_queries=5).double().numpy()
            assert np.abs(ours - reference[layer][row]).max() < 1e-5, (variant, layer, row)


def test_document_masks_and_restarting_positions_match_the_reference() -> None:
    model = random_gpt(seed=2, positions="rotary", attention_span=6)
    ids = torch.randint(5, 40, (2, 20), generator=torch.Generator().manual_seed(1))
    doc_ids = torch.tensor([[0] * 7 + [1] * 9 + [2] * 4, [0] * 20])
    positions = document_positions(doc_ids)
    reference, masks = dense_reference_attention(model, ids, doc_ids, positions)
    inputs = capture_attention_inputs(model, ids, doc_ids=doc_ids, position_ids=positions)
    for layer in range(2):
        for row in range(2):
            ours = inputs.weights(layer, row=row).double().numpy()
            assert np.abs(ours - reference[layer][row]).max() < 1e-5
            assert torch.equal(inputs.visible(layer, row), torch.from_numpy(masks[layer][row]))
    # no weight crosses a document boundary
    first_doc_keys = inputs.weights(0, row=0)[:, 7:, :7]
    assert float(first_doc_keys.abs().max()) == 0.0


@pytest.mark.parametrize("positions", ["rotary", "alibi"])
def test_weights_times_values_give_the_layers_own_output(positions: str) -> None:
    """The weights are what the fused SDPA call used: A @ v equals the layer's output
    before its output projection."""
    model = random_gpt(seed=3, positions=positions, attention_span=4)
    ids = torch.randint(5, 40, (1, 17), generator=torch.Generator().manual_seed(2))
    outputs: dict[int, torch.Tensor] = {}
    hooks = [
        block.attn.proj.register_forward_pre_hook(
            lambda module, args, i=i: outputs.__setitem__(i, args[0].detach())
        )
        for i, block in enumerate(model.blocks)
    ]
    try:
        inputs = capture_attention_inputs(model, ids)
    finally:
        for hook in hooks:
            hook.remove()
    for layer, captured in inputs.layers.items():
        mixed = inputs.weights(layer) @ captured.v[0]  # (H, T, d)
        expected = outputs[layer][0].view(17, model.config.n_head, -1).transpose(0, 1)
        torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)


def test_chunks_of_any_size_give_the_same_weights_and_rows_sum_to_one() -> None:
    model = random_gpt(seed=4)
    ids = torch.randint(5, 40, (3, 19), generator=torch.Generator().manual_seed(3))
    inputs = capture_attention_inputs(model, ids, layers=[1])
    whole = torch.cat([c.weights for c in inputs.chunks(1, chunk_queries=19)], dim=2)
    for size in (1, 4, 7):
        chunks = list(inputs.chunks(1, chunk_queries=size))
        assert [c.query_start for c in chunks] == list(range(0, 19, size))
        torch.testing.assert_close(
            torch.cat([c.weights for c in chunks], dim=2), whole, atol=1e-6, rtol=1e-6
        )
    torch.testing.assert_close(whole.sum(-1), torch.ones(3, 3, 19))
    assert float(whole.triu(diagonal=1).abs().max()) == 0.0
    # a head subset is those heads of the full maps
    subset = inputs.weights(1, [2, 0], row=1)
    torch.testing.assert_close(subset, whole[1][[2, 0]])
    torch.testing.assert_close(inputs.head_mean(1, row=2), whole[2].mean(0))


def test_capture_runs_in_eval_mode_and_restores_training() -> None:
    model = random_gpt(seed=5, dropout=0.5).train()
    ids = torch.randint(5, 40, (1, 12), generator=torch.Generator().manual_seed(4))
    first = capture_attention_inputs(model, ids).weights(0)
    second = capture_attention_inputs(model, ids).weights(0)
    assert torch.equal(first, second)  # no dropout noise
    assert model.training
    assert all(not block.attn._forward_pre_hooks for block in model.blocks)


def test_bad_layers_heads_and_shapes_are_config_errors() -> None:
    model = random_gpt(seed=6)
    ids = torch.randint(5, 40, (10,))
    with pytest.raises(ConfigError):
        capture_attention_inputs(model, ids, layers=[2])
    inputs = capture_attention_inputs(model, ids, layers=[0])
    assert inputs.rows == 1 and inputs.length == 10 and inputs.n_heads == 3
    with pytest.raises(ConfigError, match="not captured"):
        inputs.weights(1)
    with pytest.raises(ConfigError, match="heads"):
        inputs.weights(0, [3])
    with pytest.raises(ConfigError):
        capture_attention_inputs(model, torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="block_size"):
        capture_attention_inputs(model, torch.randint(5, 40, (33,)))


def test_sequence_windows_tile_the_sequence() -> None:
    assert sequence_windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert sequence_windows(4, 4) == [(0, 4)]
    with pytest.raises(ConfigError):
        sequence_windows(5, 0)


def test_corpus_window_labels_times_and_vocabulary_check(tmp_path) -> None:
    corpus = event_corpus(
        tmp_path / "c", [list("abcab"), list("cabba")], [[0, 1, 2, 3, 4], [0, 0.5, 1, 2, 4]]
    )
    seq_id = int(corpus.split("held_out")["seq_id"][0])
    window = corpus_window(corpus, seq_id, context=4, start=2)
    assert (window.start, window.stop) == (2, 6)
    assert window.labels == ["a", "b", "b", "a"]  # [BOS] c a b b a [EOS]
    assert window.times.tolist() == [0.5, 1.0, 2.0, 4.0]
    assert corpus.vocabulary.decode(window.ids) == window.labels
    with pytest.raises(CorpusError):
        corpus_window(corpus, seq_id, context=4, start=7)
    with pytest.raises(CorpusError, match="vocabulary"):
        check_model_fits_corpus(random_gpt(vocab_size=corpus.vocab_size + 1), corpus)


def test_capture_attention_records_chosen_layers_and_leaves_no_hooks() -> None:
    torch.manual_seed(16)
    config = GPTConfig(
        vocab_size=11,
        n_layer=4,
        n_head=2,
        n_embd=8,
        block_size=8,
        positions="rotary",
        layer_spans=[None, 2, None, None],
    )
    model = GPT(config).eval()
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(17))
    with capture_attention(model, layers=[1, 3]) as captured:
        model(idx)
        model(idx)
    assert sorted(captured) == [1, 3] and len(captured[1]) == 2
    assert all(not block.attn._forward_pre_hooks for block in model.blocks)
    span_mask = captured[1][0].mask
    assert span_mask[0, 0, 5].tolist() == [False] * 4 + [True, True, False, False]
    assert captured[3][0].mask[0, 0].sum().item() == 36  # plain causal, 8 * 9 / 2
    assert captured[1][0].q.shape == (2, 2, 8, 4)
    with pytest.raises(ConfigError, match="no layer 7"), capture_attention(model, [7]):
        pass
