"""Learning-rate schedule: linear warmup, then decay to exactly zero at the budget's end.

Decaying fully to zero is the baseline that efficient-training methods must be compared
against ("No Train No Gain", Kaddour et al. 2023): a schedule cut short, or one that
decays to a floor, makes a method look better than it is.

The decay follows budget *progress* (a fraction in [0, 1]), not the step number, so the
same schedule serves budgets in steps, tokens or minutes. Warmup counts steps because
its purpose (letting Adam's moment estimates settle) is measured in updates.
"""

from __future__ import annotations

import math
from typing import Literal

from seqlm.errors import ConfigError

DECAY_SHAPES = ("cosine", "linear")


def decay_multiplier(progress: float, shape: Literal["cosine", "linear"]) -> float:
    """1 at progress 0, 0 at progress 1."""
    p = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if shape == "linear":
        return 1.0 - p
    raise ConfigError(f"decay must be one of {DECAY_SHAPES}, got {shape!r}")


def lr_multiplier(
    step: int, progress: float, warmup_steps: int, shape: Literal["cosine", "linear"]
) -> float:
    """Multiplier of the peak learning rate for the step numbered `step` (0-based),
    taken when `progress` of the budget has been used.

    The smaller of the warmup ramp and the decay: continuous, needs no state, and
    still reaches zero at the end when the budget is shorter than the warmup.
    """
    warm = 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
    return min(warm, decay_multiplier(progress, shape))
