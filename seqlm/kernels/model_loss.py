"""The kernels' losses in the model's loss signature.

fn(hidden (B, T, C), weight (V, C), targets (B, T), loss_mask (B, T) | None) -> scalar.
`seqlm.model.loss` imports `kernel_losses()` and offers them by name
(`GPTConfig.loss_impl`); this module never imports the model (kernels are leaves):

- `"auto"`: `linear_cross_entropy`'s dispatcher: the plain loss below
  `LinearCrossEntropyOptions.vocab_threshold` (a vocabulary of 8,192 tokens) while the
  logits stay under `logit_limit_elements` (2^25: 8,192 tokens of a 4k vocabulary),
  the chunked loss otherwise (the model's default, so long-context steps never hold
  (N, V) logits);
- `"chunked"`: always the chunked loss;
- `"triton"`: the chunked loss with the Triton chunk kernel (CUDA only).

They follow the model's loss contract exactly: targets of `IGNORE_INDEX` add nothing;
without a mask the loss is the mean over the counted targets; with `loss_mask` it is
sum(w * ce) / sum(w) over them, and 0 (not nan) when every weight is 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from seqlm.constants import IGNORE_INDEX
from seqlm.kernels.linear_cross_entropy import LinearCrossEntropyOptions, linear_cross_entropy

# The `impl` names `LinearCrossEntropyOptions` accepts, offered as loss names as they are.
KERNEL_LOSS_IMPLS = ("auto", "chunked", "triton")


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


def kernel_loss(name: str, chunk_logit_elements: int):
    """The kernel loss `name` with chunks of `chunk_logit_elements` logits (None: `name`
    is not a kernel loss). Smaller chunks lower a long-context step's peak memory."""
    if name not in KERNEL_LOSS_IMPLS:
        return None
    options = LinearCrossEntropyOptions(impl=name, chunk_logit_elements=chunk_logit_elements)
    return functools.partial(lm_loss, options=options)


def kernel_losses() -> dict[str, Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]]:
    """{name: loss function} for each kernel implementation."""
    return {
        name: functools.partial(lm_loss, options=LinearCrossEntropyOptions(impl=name))
        for name in KERNEL_LOSS_IMPLS
    }
