"""Head importance by gate gradients, single-head ablation and the prune curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.planted_dependency import planted_sequences, random_sequences, trained_planted_model

from seqlm.analysis.head_gates import gated_heads
from seqlm.analysis.heads import (
    HeadAnalysisConfig,
    analyse_heads,
    normalise_per_layer,
    plot_heads,
)
from seqlm.errors import ConfigError
from seqlm.model import GPT, GPTConfig


def random_model() -> GPT:
    torch.manual_seed(3)
    config = GPTConfig(vocab_size=12, n_layer=2, n_head=3, n_embd=24, block_size=16, init_std=0.3)
    return GPT(config).eval()


def sequence_loss(model: GPT, seq: np.ndarray, gates: torch.Tensor | None = None):
    x = torch.as_tensor(seq[None, :-1])
    y = torch.as_tensor(seq[None, 1:])
    with gated_heads(model, gates):
        return model(x, y).loss


def test_importance_is_the_mean_absolute_gate_gradient_per_sequence() -> None:
    """Michel et al.'s I_h from one backward per batch equals one backward per sequence."""
    model = random_model()
    sequences = random_sequences([5, 9, 16, 3])
    analysis = analyse_heads(model, sequences, HeadAnalysisConfig(batch_tokens=20))
    assert all(p.grad is None for p in model.parameters())  # no gradient left on weights
    expected = np.zeros((2, 3))
    for seq in sequences:
        gates = torch.ones(2, 3, requires_grad=True)
        sequence_loss(model, seq, gates).backward()
        expected += gates.grad.abs().double().numpy()
    expected /= len(sequences)
    np.testing.assert_allclose(analysis.importance_raw, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(analysis.importance, normalise_per_layer(expected), rtol=1e-4)
    assert analysis.windows == len(sequences)


def test_ablation_and_prune_curve_are_losses_with_gates_at_zero() -> None:
    model = random_model()
    sequences = random_sequences([6, 12, 16])
    analysis = analyse_heads(model, sequences)
    tokens = sum(len(s) - 1 for s in sequences)
    assert analysis.tokens == tokens

    def loss(gates):
        with torch.no_grad():
            total = sum(float(sequence_loss(model, s, gates)) * (len(s) - 1) for s in sequences)
        return total / tokens

    assert analysis.base_loss == pytest.approx(loss(None), rel=1e-5)
    for layer, head in [(0, 0), (1, 2)]:
        gates = torch.ones(2, 3)
        gates[layer, head] = 0
        assert analysis.ablation_loss[layer, head] == pytest.approx(loss(gates), rel=1e-5)
    curve = analysis.prune_curve
    assert curve["heads_pruned"].to_list() == list(range(7))
    assert curve["loss"][0] == pytest.approx(analysis.base_loss)
    assert curve["loss"][6] == pytest.approx(loss(torch.zeros(2, 3)), rel=1e-5)
    first = analysis.prune_order[0]
    assert curve["loss"][1] == pytest.approx(analysis.ablation_loss[first], rel=1e-6)
    # The prune order is by normalised importance, least important first.
    ordered = [analysis.importance[lh] for lh in analysis.prune_order]
    assert ordered == sorted(ordered)
    table = analysis.table()
    assert table.height == 6 and sorted(table["importance_rank"].to_list()) == list(range(1, 7))
    np.testing.assert_allclose(
        table["loss_change"].to_numpy(), analysis.ablation_loss.reshape(-1) - analysis.base_loss
    )


def test_normalise_per_layer() -> None:
    scores = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalise_per_layer(scores), [[0.6, 0.8], [0.0, 0.0]])


def test_options_and_errors() -> None:
    model = random_model()
    sequences = random_sequences([6, 9])
    quick = analyse_heads(model, sequences, HeadAnalysisConfig(ablation=False, prune_points=3))
    assert quick.ablation_loss is None and "loss_change" not in quick.table().columns
    assert quick.prune_curve["heads_pruned"].to_list() == [0, 3, 6]
    with pytest.raises(ConfigError):
        HeadAnalysisConfig(prune_points=1)
    with pytest.raises(ConfigError, match="no tokens"):
        analyse_heads(model, [np.array([1])])


def test_the_copying_head_of_the_planted_model_is_found(tmp_path) -> None:
    """The head whose removal hurts most is the one the gate gradients rank first in its
    layer, and pruning every head costs more than pruning the least important one.

    Raw gate gradients are compared within a layer only (Michel et al. normalise per
    layer): in the planted model a layer-0 head that feeds the copying head can cost more
    to remove while its raw gradient is smaller than the copying head's, and which of the
    two wins depends on the CPU's float reductions during training."""
    model = trained_planted_model()
    analysis = analyse_heads(model, planted_sequences(30, seed=7))
    change = analysis.ablation_loss - analysis.base_loss
    layer, head = np.unravel_index(np.argmax(change), change.shape)
    assert np.argmax(analysis.importance[layer]) == head
    assert change.max() > 0.3
    curve = analysis.prune_curve["loss"].to_numpy()
    assert curve[-1] > curve[1] + 0.5
    png = plot_heads(analysis, tmp_path / "heads.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_conditioning_targets_are_context_only_never_counted() -> None:
    """Issue 13 item 3: a [COND] target is read as context, never counted in a loss; every
    other target keeps its loss exactly (same windows, same batches)."""
    model = random_model()
    sequences = random_sequences([6, 9, 12, 16])
    condition_id = 5
    for seq in sequences:
        seq[1] = condition_id  # a prefix token, as `seqlm corpus condition` writes it
    every = analyse_heads(model, sequences, HeadAnalysisConfig(batch_tokens=20))
    without = analyse_heads(
        model, sequences, HeadAnalysisConfig(batch_tokens=20), context_only_ids=[condition_id]
    )
    targets = [(seq[:-1], seq[1:]) for seq in sequences]
    counted = sum(int((y != condition_id).sum()) for _, y in targets)
    assert without.tokens == counted and without.context_only == every.tokens - counted
    assert without.context_only >= len(sequences) and every.context_only == 0

    def loss(gates, keep_condition: bool) -> float:
        total, count = 0.0, 0
        with torch.no_grad(), gated_heads(model, gates):
            for x, y in targets:
                logits = model(torch.as_tensor(x[None])).logits[0].double()
                nll = -torch.log_softmax(logits, -1)[torch.arange(len(y)), torch.as_tensor(y)]
                keep = torch.as_tensor(keep_condition | (y != condition_id))
                total, count = total + float(nll[keep].sum()), count + int(keep.sum())
        return total / count

    assert every.base_loss == pytest.approx(loss(None, True), rel=1e-6)
    assert without.base_loss == pytest.approx(loss(None, False), rel=1e-6)
    assert without.base_loss != pytest.approx(every.base_loss, rel=1e-3)
    gates = torch.ones(2, 3)
    gates[1, 2] = 0
    assert without.ablation_loss[1, 2] == pytest.approx(loss(gates, False), rel=1e-6)
    # importance: each window's mean loss over its counted targets only
    expected = np.zeros((2, 3))
    for x, y in targets:
        gates = torch.ones(2, 3, requires_grad=True)
        with gated_heads(model, gates):
            logits = model(torch.as_tensor(x[None])).logits[0]
        nll = -torch.log_softmax(logits, -1)[torch.arange(len(y)), torch.as_tensor(y)]
        nll[torch.as_tensor(y != condition_id)].mean().backward()
        expected += gates.grad.abs().double().numpy()
    np.testing.assert_allclose(without.importance_raw, expected / len(targets), rtol=1e-4)
    with pytest.raises(ConfigError, match="conditioning"):
        analyse_heads(model, [np.array([1, condition_id])], context_only_ids=[condition_id])
