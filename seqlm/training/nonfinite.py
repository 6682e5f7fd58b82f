"""Training that diverges says so: non-finite losses, gradients and weights.

A step whose loss or gradient norm is not finite makes no update. Up to
`train.nonfinite_skips` such steps are skipped (a rare overflow need not end a long
run); one more stops training with `TrainingDiverged`, which names the step and the
last checkpoint on disk. Weights are checked before every checkpoint, and a
non-finite tuning loss stops training before `best/` is written, so no checkpoint and
no best model ever holds NaN or inf.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from seqlm.errors import SeqlmError


class TrainingDiverged(SeqlmError):
    """Training produced a non-finite loss, gradient or weight; see the message."""


class NonFiniteGuard:
    """Counts skipped non-finite steps against the allowed budget."""

    def __init__(self, allowed_skips: int) -> None:
        self.allowed_skips = allowed_skips
        self.skipped = 0

    def step_is_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """One host sync per step: whether the loss (and gradient norm) are finite."""
        values = loss.detach().float().reshape(1)
        if grad_norm is not None:
            if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
                grad_norm = grad_norm.full_tensor()
            values = torch.cat([values, grad_norm.detach().float().reshape(1).to(values.device)])
        return bool(torch.isfinite(values).all().item())

    def record_skip(self, step: int, loss: float, where: str) -> None:
        """Count a skipped step; raise once more than the allowed number were skipped."""
        self.skipped += 1
        if self.skipped > self.allowed_skips:
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss is {loss} ({self.skipped} "
                f"non-finite step(s), train.nonfinite_skips = {self.allowed_skips}); {where}; "
                "lower train.lr or raise train.nonfinite_skips"
            )


def weights_are_finite(parameters: Iterable[torch.Tensor]) -> bool:
    for tensor in parameters:
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        if not bool(torch.isfinite(tensor.detach()).all().item()):
            return False
    return True


def diverged(kind: str, step: int, value: float | None, where: str) -> TrainingDiverged:
    shown = "" if value is None or math.isfinite(value) else f" ({value})"
    return TrainingDiverged(
        f"training diverged at step {step}: {kind} not finite{shown}; {where}; lower train.lr"
    )
