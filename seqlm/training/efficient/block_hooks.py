"""Which blocks of a GPT run, and how much their branches weigh: attached from outside.

Layer dropping and layer stacking run a model with some blocks skipped (the residual
stream passes through) and, for progressive layer dropping, the kept blocks' residual
branches scaled. The model knows nothing of this: `selected_blocks(model, active,
scales)` swaps each skipped block for a pass-through module and puts forward hooks on
the kept blocks' branch outputs for the duration of a `with` block, then restores the
model exactly. A skipped block therefore costs no compute, as in the papers.

The branch of a sublayer is what its placement adds to the residual stream
(`seqlm.model.norms`): the sublayer's output under Pre-LN and Post-LN (where it is added
before the norm), the outer norm's output under Peri-LN; scaling it there gives
x + s * branch (Pre/Peri) and Norm(x + s * branch) (Post).

`stack_blocks` rebuilds a model's block list from copies of its blocks (growing depth).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from seqlm.errors import ConfigError
from seqlm.model.gpt import GPT


class PassThrough(nn.Module):
    """Stands in for a skipped block: returns the residual stream unchanged."""

    def forward(self, x: Tensor, *args: object) -> Tensor:
        return x


def branch_ends(block: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The modules whose outputs are a block's attention and MLP residual branches."""
    if block.placement == "peri":
        return block.attn_norms.outer, block.mlp_norms.outer
    return block.attn, block.mlp


def _scale_hook(scale: float | Tensor):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return output * scale

    return hook


@contextmanager
def selected_blocks(
    model: GPT,
    active: Sequence[bool],
    scales: Sequence[float | Tensor] | None = None,
) -> Iterator[None]:
    """Within the block, forwards of `model` skip block i where `active[i]` is False and
    weigh block i's residual branches by `scales[i]` (None: unscaled)."""
    blocks = model.blocks
    for name, per_block in (("active_blocks", active), ("block_scales", scales)):
        if per_block is not None and len(per_block) != len(blocks):
            raise ConfigError(f"{name} has {len(per_block)} entries for {len(blocks)} blocks")
    skipped: dict[int, nn.Module] = {}
    handles = []
    try:
        for i, keep in enumerate(active):
            if not keep:
                skipped[i] = blocks[i]
                blocks[i] = PassThrough()
            elif scales is not None:
                hook = _scale_hook(scales[i])
                handles += [end.register_forward_hook(hook) for end in branch_ends(blocks[i])]
        yield
    finally:
        for handle in handles:
            handle.remove()
        for i, block in skipped.items():
            blocks[i] = block


def stack_blocks(model: GPT, order: Sequence[int]) -> None:
    """Rebuild the block list from copies of existing blocks (layer stacking).

    `order` lists source block indices, e.g. [0, 1, 2, 3, 0, 1, 2, 3] doubles depth.
    Per-layer spans follow their blocks. Under Mix-LN the copied placements must
    still match the config's rule, or the saved config would describe another model.
    Optimizers must be rebuilt afterwards (the parameters are new tensors).
    """
    order = list(order)
    blocks = model.blocks
    if not order or any(not 0 <= i < len(blocks) for i in order):
        raise ConfigError(f"stack order {order} must name blocks 0..{len(blocks) - 1}")
    layer_spans = None
    if model.config.layer_spans is not None:
        layer_spans = [model.config.layer_spans[i] for i in order]
    config = dataclasses.replace(model.config, n_layer=len(order), layer_spans=layer_spans)
    placements = [blocks[i].placement for i in order]
    if placements != config.placement_per_layer():
        raise ConfigError(
            f"stacking {order} gives norm placements {placements}, but the config's "
            f"rule gives {config.placement_per_layer()}"
        )
    new_blocks = nn.ModuleList(copy.deepcopy(blocks[i]) for i in order)
    for index, block in enumerate(new_blocks):
        block.attn.layer_index = index
    model.blocks = new_blocks
    model.config = config
