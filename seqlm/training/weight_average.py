"""Weight averaging (`train.ema_decay`): an exponential moving average of the weights.

After every optimizer step the average moves towards the weights,
`average = d * average + (1 - d) * weights`, with `d = min(ema_decay, (1 + s) / (10 + s))`
at step `s` (the average forgets the random initialisation within the first steps). The
averaged weights are the run's model: the tuning loss is measured with them, best/ and
the top-level `model.safetensors` hold them; the optimizer goes on with its own weights,
which every checkpoint keeps beside them as `model_raw.safetensors` so that a resumed
run continues exactly. `decay_for_span(steps)` gives the decay whose average spans
about `steps` steps (`1 - 1 / steps`).

The average is kept on the module's own parameters (sharded ones too), so it works under
DDP and FSDP2 alike; reading it means swapping it into the module (`applied`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

WARMUP = 10  # the (1 + s) / (10 + s) ramp of the decay's first steps


def decay_for_span(steps: float) -> float:
    """The decay whose average spans about `steps` optimizer steps (0 = no average)."""
    return 0.0 if steps <= 1 else 1.0 - 1.0 / steps


def step_decay(decay: float, step: int) -> float:
    """The decay used at optimizer step `step` (1-based): `decay`, ramped up early."""
    return min(decay, (1 + step) / (WARMUP + step))


class WeightAverage:
    """The moving average of `module`'s parameters; off (every method a no-op, `applied`
    a plain context) when `decay` is 0."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self._params = list(module.parameters()) if self.enabled else []
        self._average = [p.detach().clone() for p in self._params]

    @property
    def enabled(self) -> bool:
        return self.decay > 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the weights after optimizer step `step`."""
        if not self.enabled:
            return
        weight = 1.0 - step_decay(self.decay, step)
        torch._foreach_lerp_(self._average, [p.detach() for p in self._params], weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside: the module holds the averaged weights; after: its own again."""
        if not self.enabled:
            yield
            return
        own = self._swap_in(self._average)
        try:
            yield
        finally:
            self._swap_in(own)

    @torch.no_grad()
    def _swap_in(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        before = [p.detach().clone() for p in self._params]
        for param, tensor in zip(self._params, tensors, strict=True):
            param.copy_(tensor)
        return before

    def states(
        self, read: Callable[[], dict[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(the model's weights, the optimizer's own weights or None) as `read` returns
        them: with the average on, the model's weights are the averaged ones."""
        if not self.enabled:
            return read(), None
        with self.applied():
            averaged = {k: v.detach().clone() for k, v in read().items()}
        return averaged, read()

    @torch.no_grad()
    def load(self, load_averaged: Callable[[], None]) -> None:
        """Take the average from a checkpoint: `load_averaged` loads the averaged weights
        into the module (which holds its own weights before and after)."""
        if not self.enabled:
            return
        own = [p.detach().clone() for p in self._params]
        load_averaged()
        self._average = [p.detach().clone() for p in self._params]
        self._swap_in(own)

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """Leave the averaged weights in the module (the end of training)."""
        if self.enabled:
            self._swap_in(self._average)
