"""Language-model losses, behind one small swappable signature.

A loss function takes the final normed hidden states, the LM head weight, the targets
and optional per-token weights, and returns the scalar loss:

    fn(hidden: (B, T, C), weight: (V, C), targets: (B, T) int, loss_mask: (B, T) | None)

"dense" (built in) materialises the logits; "auto", "chunked" and "triton" are the
fused or chunked linear + cross-entropy of `seqlm.kernels.model_loss` (imported here:
the model stands on the kernels, never the other way). `register_loss_impl(name, fn)`
adds another; `GPTConfig.loss_impl` picks one by name, and `GPT.loss_fn` can also be
assigned directly.

Targets equal to `IGNORE_INDEX` (-100, `seqlm.constants`: padding, cross-document targets) add nothing.
Without weights the loss is the mean over the other targets (exactly
`F.cross_entropy`'s default, so the fast path is unchanged); with weights it is
sum(w * ce) / sum(w) over them (0 when every weight is 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlm.constants import IGNORE_INDEX
from seqlm.errors import ConfigError
from seqlm.kernels.model_loss import kernel_losses

LossFunction = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def cross_entropy_from_logits(
    logits: Tensor, targets: Tensor, loss_mask: Tensor | None = None
) -> Tensor:
    """Mean (or weighted mean) next-token cross-entropy from (B, T, V) logits."""
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)
    if loss_mask is None:
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX)
    per_token = F.cross_entropy(
        flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    weights = loss_mask.reshape(-1).to(per_token.dtype) * (flat_targets != IGNORE_INDEX)
    return (per_token * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


def dense_lm_loss(
    hidden: Tensor, weight: Tensor, targets: Tensor, loss_mask: Tensor | None = None
) -> Tensor:
    """The plain loss: logits = hidden @ weight.T, then cross-entropy."""
    return cross_entropy_from_logits(F.linear(hidden, weight), targets, loss_mask)


_LOSS_IMPLS: dict[str, LossFunction] = {"dense": dense_lm_loss, **kernel_losses()}


def register_loss_impl(name: str, fn: LossFunction) -> None:
    """Make `fn` selectable as `GPTConfig(loss_impl=name)`."""
    _LOSS_IMPLS[name] = fn


def loss_impl(name: str) -> LossFunction:
    """The loss function registered under `name`."""
    if name not in _LOSS_IMPLS:
        raise ConfigError(
            f"no loss implementation named {name!r}; available: {', '.join(sorted(_LOSS_IMPLS))}"
        )
    return _LOSS_IMPLS[name]
