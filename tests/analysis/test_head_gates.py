"""Per-head gates attached as hooks (`gated_heads`): ones change nothing, zeros remove
exactly that head, and the model is plain again after the block."""

from __future__ import annotations

import pytest
import torch

from seqlm.analysis.head_gates import gated_heads
from seqlm.errors import ConfigError
from seqlm.model import GPT, GPTConfig


def run_gated(model: GPT, idx: torch.Tensor, gates: torch.Tensor, targets=None):
    with gated_heads(model, gates):
        return model(idx, targets)


def _model(**overrides) -> GPT:
    torch.manual_seed(0)
    values = {
        "vocab_size": 17,
        "n_layer": 3,
        "n_head": 4,
        "n_embd": 32,
        "block_size": 12,
        "init_std": 0.2,
    }
    values.update(overrides)
    return GPT(GPTConfig(**values)).eval()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"positions": "rotary", "norm": "rmsnorm"}, {"attention_span": 3}],
)
def test_gates_of_ones_change_nothing(overrides: dict) -> None:
    model = _model(**overrides)
    idx = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(1))
    plain = model(idx).logits
    gated = run_gated(model, idx, torch.ones(3, 4)).logits
    torch.testing.assert_close(gated, plain, rtol=0, atol=1e-6)


def test_zero_gate_equals_removing_the_heads_projection_columns() -> None:
    """Gating head h of layer l to 0 is the same model as zeroing that head's slice of
    the output projection's input columns."""
    model = _model()
    idx = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(2))
    gates = torch.ones(3, 4)
    gates[1, 2] = 0.0
    gated = run_gated(model, idx, gates).logits
    head_dim = 32 // 4
    with torch.no_grad():
        model.blocks[1].attn.proj.weight[:, 2 * head_dim : 3 * head_dim] = 0.0
    torch.testing.assert_close(gated, model(idx).logits, rtol=0, atol=1e-6)
    plain = _model()
    assert not torch.allclose(gated, plain(idx).logits)
    run_gated(plain, idx, gates)
    assert all(not block.attn.proj._forward_pre_hooks for block in plain.blocks)
    torch.testing.assert_close(plain(idx).logits, _model()(idx).logits, rtol=0, atol=0)


def test_gate_gradients_flow_to_every_head() -> None:
    model = _model()
    idx = torch.randint(0, 17, (3, 12), generator=torch.Generator().manual_seed(3))
    gates = torch.ones(3, 4, requires_grad=True)
    loss = run_gated(model, idx[:, :-1], gates, idx[:, 1:]).loss
    loss.backward()
    assert gates.grad is not None and gates.grad.shape == (3, 4)
    assert (gates.grad.abs() > 0).all()


def test_gate_shape_is_checked() -> None:
    model = _model()
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="head_gates"):
        run_gated(model, idx, torch.ones(4, 3))


def test_per_row_gates_act_on_their_row_only() -> None:
    """Gates of shape (B, n_layer, n_head): row b runs as if given gates[b] alone, so one
    backward gives each row's own gate gradient."""
    model = _model()
    idx = torch.randint(0, 17, (3, 12), generator=torch.Generator().manual_seed(4))
    gates = torch.rand(3, 3, 4, generator=torch.Generator().manual_seed(5))
    together = run_gated(model, idx, gates).logits
    for row in range(3):
        alone = run_gated(model, idx[row : row + 1], gates[row]).logits
        torch.testing.assert_close(together[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="2 rows, the batch 3"):
        run_gated(model, idx, torch.ones(2, 3, 4))
