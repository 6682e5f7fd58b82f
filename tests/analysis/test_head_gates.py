"""Per-head gates (`head_gates=`): ones change nothing, zeros remove exactly that head."""

from __future__ import annotations

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.model import GPT, GPTConfig


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
    gated = model(idx, head_gates=torch.ones(3, 4)).logits
    torch.testing.assert_close(gated, plain, rtol=0, atol=1e-6)


def test_zero_gate_equals_removing_the_heads_projection_columns() -> None:
    """Gating head h of layer l to 0 is the same model as zeroing that head's slice of
    the output projection's input columns."""
    model = _model()
    idx = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(2))
    gates = torch.ones(3, 4)
    gates[1, 2] = 0.0
    gated = model(idx, head_gates=gates).logits
    head_dim = 32 // 4
    with torch.no_grad():
        model.blocks[1].attn.proj.weight[:, 2 * head_dim : 3 * head_dim] = 0.0
    torch.testing.assert_close(gated, model(idx).logits, rtol=0, atol=1e-6)
    assert not torch.allclose(gated, _model()(idx).logits)


def test_gate_gradients_flow_to_every_head() -> None:
    model = _model()
    idx = torch.randint(0, 17, (3, 12), generator=torch.Generator().manual_seed(3))
    gates = torch.ones(3, 4, requires_grad=True)
    loss = model(idx[:, :-1], idx[:, 1:], head_gates=gates).loss
    loss.backward()
    assert gates.grad is not None and gates.grad.shape == (3, 4)
    assert (gates.grad.abs() > 0).all()


def test_gate_shape_is_checked() -> None:
    model = _model()
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="head_gates"):
        model(idx, head_gates=torch.ones(4, 3))


def test_per_row_gates_act_on_their_row_only() -> None:
    """Gates of shape (B, n_layer, n_head): row b runs as if given gates[b] alone, so one
    backward gives each row's own gate gradient."""
    model = _model()
    idx = torch.randint(0, 17, (3, 12), generator=torch.Generator().manual_seed(4))
    gates = torch.rand(3, 3, 4, generator=torch.Generator().manual_seed(5))
    together = model(idx, head_gates=gates).logits
    for row in range(3):
        alone = model(idx[row : row + 1], head_gates=gates[row]).logits
        torch.testing.assert_close(together[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="rows, layers, heads"):
        model(idx, head_gates=torch.ones(2, 3, 4))
