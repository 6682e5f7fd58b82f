"""Linear probes: layer states, labels, grouped folds, the control task, selectivity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from seqlm.analysis.probes import (
    TOKEN_KIND,
    LayerStates,
    ProbeConfig,
    control_labels,
    layer_states,
    plot_probes,
    probe_accuracy,
    run_probes,
    special_ids,
    token_labels,
)
from seqlm.errors import ConfigError
from seqlm.model import GPT, GPTConfig

TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]", "LAB//[UNK]", "LAB//a", "DX//b", "DX//c"]


def random_model(block_size: int = 8) -> GPT:
    torch.manual_seed(1)
    config = GPTConfig(vocab_size=9, n_layer=2, n_head=2, n_embd=16, block_size=block_size)
    return GPT(config).eval()


def sequences() -> list[np.ndarray]:
    return [
        np.array([1, 6, 7, 3, 8, 2]),
        np.array([1, 8, 2]),
        np.array([1, 6, 6, 7, 8, 7, 6, 6, 8, 7, 6, 2]),  # longer than the block size
    ]


def test_layer_states_are_the_residual_stream_at_every_probed_token() -> None:
    model = random_model(block_size=16)
    seqs = sequences()
    states = layer_states(model, seqs, skip_ids=special_ids(TOKENS), batch_tokens=10)
    probed = [(s, p) for s, seq in enumerate(seqs) for p in range(len(seq)) if seq[p] >= 5]
    assert list(zip(states.sequence.tolist(), states.position.tolist(), strict=True)) == probed
    np.testing.assert_array_equal(states.token, [seqs[s][p] for s, p in probed])
    assert len(states.layers) == 3 and all(x.shape == (len(probed), 16) for x in states.layers)
    with torch.no_grad():
        for s, seq in enumerate(seqs):
            x = torch.as_tensor(seq[None])
            rows = [i for i, (owner, _) in enumerate(probed) if owner == s]
            positions = torch.as_tensor([p for owner, p in probed if owner == s])
            embedded = model.token_embedding(x) + model.position_embedding(len(seq), None, "cpu")
            np.testing.assert_allclose(
                states.layers[0][rows], embedded[0, positions].numpy(), atol=1e-5
            )
            final = model.final_norm(torch.as_tensor(states.layers[2][rows]))
            np.testing.assert_allclose(
                final.numpy(), model.hidden_states(x)[0, positions].numpy(), atol=1e-4
            )


def test_windows_longer_than_the_block_still_give_one_state_per_token() -> None:
    model = random_model(block_size=8)
    states = layer_states(model, sequences(), skip_ids=special_ids(TOKENS))
    assert states.token.shape[0] == 14  # every non-special token once, the [UNK] skipped
    assert np.all(np.diff(states.sequence) >= 0)


def test_control_labels_are_one_random_label_per_token_type() -> None:
    rng = np.random.default_rng(0)
    token = rng.integers(0, 50, size=5000)
    labels = np.where(rng.random(5000) < 0.8, "a", "b")
    control = control_labels(token, labels, seed=3)
    for t in np.unique(token):
        assert len(set(control[token == t])) == 1
    assert set(control) <= {"a", "b"}
    type_labels = [control[token == t][0] for t in np.unique(token)]
    assert 0.6 < np.mean(np.asarray(type_labels) == "a") < 0.95  # the 80/20 balance
    np.testing.assert_array_equal(control, control_labels(token, labels, seed=3))


def test_grouped_folds_leave_no_entity_on_both_sides() -> None:
    """An entity-level label with a feature naming the entity: ungrouped folds could
    memorise it, grouped folds leave only chance."""
    rng = np.random.default_rng(1)
    entities = np.repeat(np.arange(40), 25)
    entity_label = rng.integers(0, 2, size=40)
    labels = entity_label[entities].astype(str)
    features = np.eye(40)[entities] + 0.01 * rng.normal(size=(1000, 40))
    accuracy, majority = probe_accuracy(features, labels, entities, ProbeConfig(folds=5))
    assert accuracy.shape == (5,) and majority.shape == (5,)
    assert accuracy.mean() < 0.75
    signal = (entity_label[entities] + rng.normal(0, 0.1, 1000))[:, None]
    accuracy, _ = probe_accuracy(signal, labels, entities, ProbeConfig(folds=5))
    assert accuracy.mean() > 0.95


def test_selectivity_separates_a_real_signal_from_token_identity() -> None:
    rng = np.random.default_rng(2)
    n = 1200
    token = rng.integers(5, 25, size=n)
    entities = np.repeat(np.arange(60), n // 60)
    sequence_label = np.where(rng.random(60) < 0.5, "pre", "post")[entities]
    identity = np.eye(25)[token]
    # Layer 0 knows only the token (so the control task is learnable there); layer 1
    # carries the label and no token identity.
    carried = np.column_stack(
        [(sequence_label == "pre") + rng.normal(0, 0.2, n), rng.normal(size=n)]
    )
    states = LayerStates(
        token=token,
        sequence=entities,
        position=np.zeros(n, dtype=np.int64),
        layers=[identity + 0.01 * rng.normal(size=identity.shape), carried],
    )
    result = run_probes(states, sequence_label, entities, label="condition")
    table = result.table
    assert table["layer"].to_list() == [0, 1]
    assert table["accuracy"][1] > 0.9 and table["accuracy"][0] < 0.7
    assert table["selectivity"][1] > 0.3 and table["selectivity"][0] < 0.0
    assert table["control_accuracy"][0] > 0.9
    np.testing.assert_allclose(
        table["selectivity"], table["accuracy"] - table["control_accuracy"], atol=1e-12
    )
    assert result.classes == ["post", "pre"] and result.entities == 60 and result.folds == 5


def test_labels_from_the_index_and_from_token_kinds(tmp_path) -> None:
    model = random_model(block_size=16)
    states = layer_states(model, sequences(), skip_ids=special_ids(TOKENS))
    index = pl.DataFrame({"entity": ["p1", "p2", "p3"], "cohort": ["x", None, "y"]})
    cohort = token_labels(states, index, "cohort")
    assert cohort.tolist() == [["x", None, "y"][s] for s in states.sequence]
    kinds = token_labels(states, index, TOKEN_KIND, TOKENS)
    assert set(kinds.tolist()) == {"LAB", "DX"}
    with pytest.raises(ConfigError, match="no label 'bird'"):
        token_labels(states, index, "bird")
    with pytest.raises(ConfigError, match="token strings"):
        token_labels(states, index, TOKEN_KIND)
    entities = index["entity"].to_numpy()[states.sequence]
    # Tokens of p2 have no cohort and are left out; what is left has two classes.
    result = run_probes(states, cohort, entities, label="cohort", config=ProbeConfig(folds=2))
    assert result.tokens == int(np.sum(states.sequence != 1)) and result.entities == 2
    assert plot_probes(result, tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"
    one_class = np.full(states.token.shape[0], "x", dtype=object)
    with pytest.raises(ConfigError, match="at least 2"):
        run_probes(states, one_class, entities, label="cohort")
    with pytest.raises(ConfigError, match="2 entities"):
        probe_accuracy(states.layers[0], kinds.astype(str), np.zeros(len(kinds)), ProbeConfig())
    with pytest.raises(ConfigError):
        ProbeConfig(folds=1)


def test_conditioning_positions_are_never_probe_examples() -> None:
    """Issue 13 item 3: a [COND//group=...] position spells out the label, so a probe for
    that label would read the answer there; it is context only, skipped and counted."""
    tokens = [*TOKENS, "[COND//group=a]", "[COND//group=b]"]
    torch.manual_seed(1)
    config = GPTConfig(vocab_size=len(tokens), n_layer=2, n_head=2, n_embd=16, block_size=16)
    model = GPT(config).eval()
    conditioned = [np.insert(seq, 1, 9 + s % 2) for s, seq in enumerate(sequences())]
    states = layer_states(
        model, conditioned, skip_ids=special_ids(tokens), context_only_ids=[9, 10]
    )
    assert states.context_only == len(conditioned)
    assert not np.isin(states.token, [9, 10]).any()
    # The other positions are the same tokens with the same states as probing them with
    # the [COND] ids skipped outright (they stay in every window's context).
    plain = layer_states(model, conditioned, skip_ids=[*special_ids(tokens), 9, 10])
    np.testing.assert_array_equal(states.token, plain.token)
    np.testing.assert_array_equal(states.position, plain.position)
    for ours, theirs in zip(states.layers, plain.layers, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert plain.context_only == 0
    entities = np.array(["p1", "p2", "p3"], dtype=object)[states.sequence]
    labels = np.array(["a", "b", "a"], dtype=object)[states.sequence]
    result = run_probes(states, labels, entities, label="group", config=ProbeConfig(folds=2))
    assert result.context_only == len(conditioned) and result.tokens == states.token.shape[0]
