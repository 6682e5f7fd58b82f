"""Contexts longer than trained: rotary interpolation / extrapolation, and the clear
errors where positions cannot extend (learned tables, rotary tables too short)."""

from __future__ import annotations

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.model import GPT, preset
from seqlm.model.positions import LearnedPositions, RotaryPositions, extend_context


def tiny(positions: str, block_size: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(
        preset(
            "micro",
            vocab_size=20,
            block_size=block_size,
            n_layer=1,
            n_head=2,
            n_embd=16,
            positions=positions,
            dropout=0.0,
        )
    )


def test_interpolation_maps_new_positions_onto_trained_angles():
    trained = RotaryPositions(8, 32)
    scaled = RotaryPositions(8, 128, scale=4.0)
    cos_t, sin_t = trained(32, None)
    cos_s, sin_s = scaled(128, None)
    # Position 4p of the scaled table is position p of the trained one.
    torch.testing.assert_close(cos_s[::4], cos_t)
    torch.testing.assert_close(sin_s[::4], sin_t)


def test_extend_context_interpolates_a_rotary_model():
    model = tiny("rotary")
    idx = torch.randint(0, 20, (1, 100))
    with pytest.raises(ConfigError, match="exceeds the model's block_size 32"):
        model(idx)
    assert extend_context(model, 128) == 4.0
    assert model.config.block_size == 128 and model.rotary.scale == 4.0
    out = model(idx, idx)
    assert out.logits.shape == (1, 100, 20) and torch.isfinite(out.loss)
    # A second extension composes with the first: 256 / 32 overall.
    assert extend_context(model, 256) == 8.0
    assert extend_context(model, 64) == 1.0  # shorter than now: nothing to do


def test_extrapolation_warns_and_keeps_the_trained_angles():
    model = tiny("rotary")
    cos_before = model.rotary.cos_cached.clone()
    with pytest.warns(UserWarning, match="extrapolated"):
        assert extend_context(model, 64, interpolate=False) == 1.0
    torch.testing.assert_close(model.rotary.cos_cached[:32], cos_before)


def test_learned_positions_cannot_extend():
    model = tiny("learned")
    with pytest.raises(ConfigError, match="learned positions for 32 tokens; they cannot extend"):
        extend_context(model, 64)
    table = LearnedPositions(8, 4)
    with pytest.raises(ConfigError, match="cover 0..7 and cannot extend to 9"):
        table(9, None, torch.device("cpu"))


def test_rotary_table_too_short_is_a_clear_error():
    with pytest.raises(ConfigError, match="built for 16 tokens, not 17"):
        RotaryPositions(8, 16)(17, None)
    with pytest.raises(ConfigError, match="scale must be >= 1"):
        RotaryPositions(8, 16, scale=0.5)
