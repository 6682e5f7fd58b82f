"""The kernels' losses, offered to the model through its loss registry.

`seqlm.model.loss` selects a loss by name (`GPTConfig.loss_impl`) with the signature
fn(hidden (B, T, C), weight (V, C), targets (B, T), loss_mask (B, T) | None) -> scalar,
and imports `seqlm.kernels` to find names it does not know. Registered here:

- `"auto"`: `linear_cross_entropy`'s dispatcher: the plain loss below
  `LinearCrossEntropyOptions.vocab_threshold` (8,192 tokens), the chunked loss from
  there on (what the trainer should use by default);
- `"chunked"`: always the chunked loss;
- `"triton"`: the chunked loss with the Triton chunk kernel (CUDA only).

They follow the model's loss contract exactly: targets of -100 add nothing; without a
mask the loss is the mean over the counted targets; with `loss_mask` it is
sum(w * ce) / sum(w) over them, and 0 (not nan) when every weight is 0.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from seqlm.kernels.linear_cross_entropy import LinearCrossEntropyOptions, linear_cross_entropy

IGNORE_INDEX = -100
LOSS_NAMES: dict[str, str] = {"auto": "auto", "chunked": "chunked", "triton": "triton"}


def lm_loss(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    loss_mask: Tensor | None = None,
    *,
    options: LinearCrossEntropyOptions | None = None,
) -> Tensor:
    """The model's next-token loss through `linear_cross_entropy`."""
    if loss_mask is None:
        return linear_cross_entropy(
            hidden, weight, targets, ignore_index=IGNORE_INDEX, options=options
        )
    total = linear_cross_entropy(
        hidden,
        weight,
        targets,
        token_weights=loss_mask,
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        options=options,
    )
    counted = loss_mask.to(total.dtype) * (targets != IGNORE_INDEX)
    return total / counted.sum().clamp_min(torch.finfo(total.dtype).tiny)


def register_model_losses() -> bool:
    """Register the losses with `seqlm.model.loss`; False when there is no model package."""
    try:
        from seqlm.model.loss import register_loss_impl
    except ModuleNotFoundError as err:
        if err.name in ("seqlm.model", "seqlm.model.loss"):
            return False
        raise
    for name, impl in LOSS_NAMES.items():
        register_loss_impl(
            name, functools.partial(lm_loss, options=LinearCrossEntropyOptions(impl=impl))
        )
    return True
