"""Warmup then decay to exactly zero at the end of the budget."""

from __future__ import annotations

import math

import pytest

from seqlm.errors import ConfigError
from seqlm.training.schedule import decay_multiplier, lr_multiplier


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_decay_runs_from_one_to_exactly_zero(shape):
    assert decay_multiplier(0.0, shape) == 1.0
    assert decay_multiplier(1.0, shape) == 0.0
    assert decay_multiplier(1.5, shape) == 0.0  # past the budget: still zero
    values = [decay_multiplier(p / 100, shape) for p in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_cosine_and_linear_midpoints():
    assert decay_multiplier(0.5, "cosine") == pytest.approx(0.5)
    assert decay_multiplier(0.25, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert decay_multiplier(0.25, "linear") == pytest.approx(0.75)


def test_warmup_ramps_linearly_then_hands_over_to_the_decay():
    steps, warmup = 1000, 100
    lrs = [lr_multiplier(s, s / steps, warmup, "cosine") for s in range(steps)]
    assert lrs[0] == pytest.approx(1 / warmup)
    assert lrs[49] == pytest.approx(50 / warmup)
    # The rate is the smaller of ramp and decay: it peaks where they cross, just
    # before the ramp would reach 1, and only falls after that.
    top = lrs.index(max(lrs))
    assert warmup - 5 <= top < warmup
    assert max(lrs) > 0.97
    assert all(a >= b for a, b in zip(lrs[top:], lrs[top + 1 :], strict=False))
    assert lrs[-1] < 1e-4  # the last step's rate is almost zero
    assert lr_multiplier(steps, 1.0, warmup, "cosine") == 0.0


def test_budget_shorter_than_warmup_still_ends_at_zero():
    lrs = [lr_multiplier(s, s / 10, 100, "linear") for s in range(11)]
    assert lrs[-1] == 0.0
    assert max(lrs) < 0.1


def test_no_warmup_starts_at_the_peak():
    assert lr_multiplier(0, 0.0, 0, "cosine") == 1.0


def test_unknown_decay_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="decay"):
        decay_multiplier(0.3, "exponential")
