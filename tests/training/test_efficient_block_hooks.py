"""Skipped blocks and scaled branches attached from outside the model, and stacking."""

from __future__ import annotations

import pytest
import torch
from helpers.model_helpers import randomized, tiny_config

from seqlm.errors import ConfigError
from seqlm.model import GPT
from seqlm.training.efficient.block_hooks import PassThrough, selected_blocks, stack_blocks


def run(model: GPT, idx: torch.Tensor, active, scales=None) -> torch.Tensor:
    with selected_blocks(model, active, scales):
        return model(idx).logits


def test_skipped_blocks_and_scales() -> None:
    model = randomized(tiny_config(), seed=12)
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(13))
    full = model(idx).logits
    everything = [True] * 4
    torch.testing.assert_close(run(model, idx, everything, [1.0] * 4), full, rtol=0, atol=0)
    skipped = run(model, idx, [True, False, True, True])
    zero_scaled = run(model, idx, everything, [1.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(skipped, zero_scaled)  # pre-LN: a zero branch is identity
    assert (skipped - full).abs().max() > 1e-3
    # The model is whole again afterwards: same blocks, no hooks left.
    assert not any(isinstance(block, PassThrough) for block in model.blocks)
    assert not any(m._forward_hooks for m in model.modules())
    torch.testing.assert_close(model(idx).logits, full, rtol=0, atol=0)
    shallower = randomized(tiny_config(), seed=12)
    stack_blocks(shallower, [0, 2, 3])
    torch.testing.assert_close(shallower(idx).logits, skipped)
    with pytest.raises(ConfigError, match="active_blocks has 2 entries"):
        run(model, idx, [True, False])


@pytest.mark.parametrize("placement", ["pre", "post", "peri"])
def test_a_scale_weighs_the_residual_branch_as_written(placement: str) -> None:
    """scale s gives x + s * branch (Pre, Peri) and Norm(x + s * branch) (Post): the same
    as scaling the block's output projections by s (their biases too)."""
    config = tiny_config(norm_placement=placement, n_layer=2)
    model = randomized(config, seed=3)
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(4))
    scaled = run(model, idx, [True, True], [0.5, 2.0])
    if placement == "peri":  # the branch ends in the outer norm: scale its affine part
        ends = [(b.attn_norms.outer, b.mlp_norms.outer) for b in model.blocks]
    else:
        ends = [(b.attn.proj, b.mlp.down) for b in model.blocks]
    with torch.no_grad():
        for (first, second), scale in zip(ends, [0.5, 2.0], strict=True):
            for module in (first, second):
                for parameter in module.parameters():
                    parameter.mul_(scale)
    torch.testing.assert_close(scaled, model(idx).logits)


def test_stack_blocks_copies_blocks_and_spans() -> None:
    model = randomized(tiny_config(layer_spans=[1, 2, 3, None]), seed=14)
    stack_blocks(model, [0, 1, 2, 3, 2, 3])
    assert model.config.n_layer == 6 and len(model.blocks) == 6
    assert model.attention_spans == [1, 2, 3, None, 3, None]
    assert [b.attn.layer_index for b in model.blocks] == list(range(6))
    # copies, not shared modules
    assert model.blocks[4].attn.qkv.weight.data_ptr() != model.blocks[2].attn.qkv.weight.data_ptr()
    torch.testing.assert_close(model.blocks[4].attn.qkv.weight, model.blocks[2].attn.qkv.weight)
    idx = torch.randint(0, 11, (1, 8), generator=torch.Generator().manual_seed(15))
    assert model(idx).logits.shape == (1, 8, 11)
    mixed = GPT(tiny_config(norm_placement="mix"))
    with pytest.raises(ConfigError, match="placements"):
        stack_blocks(mixed, [0, 1, 2, 3, 0, 1, 2, 3])
