"""Per-head gates, attached to a GPT from outside with forward pre-hooks.

`gated_heads(model, gates)` multiplies head h's output in layer i by `gates[i, h]`
before that layer's output projection (shape (n_layer, n_head), or (B, n_layer, n_head)
for a gate per batch row): ones change nothing, zero removes the head, and the
gradient of the loss with respect to the gates measures head importance
(`seqlm.analysis.heads`). The model itself knows nothing of gates: each attention's
output projection (`attn.proj`) receives the heads side by side, (B, T, H * d) with head
h in channels h*d..(h+1)*d, and the hook scales those channels. It works the same with
and without a KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from seqlm.errors import ConfigError


def check_gate_shape(gates: Tensor, n_layer: int, n_head: int) -> None:
    """Raise unless `gates` is (n_layer, n_head) or (B, n_layer, n_head)."""
    shape = tuple(gates.shape)
    if shape == (n_layer, n_head) or (len(shape) == 3 and shape[1:] == (n_layer, n_head)):
        return
    raise ConfigError(
        f"head_gates has shape {shape}, expected ({n_layer}, {n_head}) (layers, heads) or "
        f"(rows, {n_layer}, {n_head}) (rows, layers, heads)"
    )


def _gate_hook(gate: Tensor, n_head: int):
    """A pre-hook scaling each head's channels of the projection's input by `gate`
    ((n_head,) or (B, n_head))."""

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (heads,) = args
        batch, seq_len, width = heads.shape
        if gate.dim() == 2 and gate.shape[0] != batch:
            raise ConfigError(f"head_gates has {gate.shape[0]} rows, the batch {batch}")
        per_head = heads.view(batch, seq_len, n_head, width // n_head)
        scale = gate.to(heads.dtype).reshape(-1, 1, n_head, 1)
        return ((per_head * scale).reshape(batch, seq_len, width),)

    return hook


@contextmanager
def gated_heads(model: nn.Module, gates: Tensor | None) -> Iterator[None]:
    """Within the block, every forward of `model` (a seqlm GPT) runs with head gates.

    The shape is checked once here; None attaches nothing (plain forwards).
    """
    if gates is None:
        yield
        return
    blocks = model.blocks
    n_head = blocks[0].attn.n_head
    check_gate_shape(gates, len(blocks), n_head)
    handles = [
        block.attn.proj.register_forward_pre_hook(_gate_hook(gates[..., i, :], n_head))
        for i, block in enumerate(blocks)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
