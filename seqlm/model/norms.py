"""Norm choice (LayerNorm or RMSNorm) and where a block puts its norms.

Placements, for a sublayer F (attention or MLP) applied to the residual stream x:

- "pre"  (GPT-2):            x + F(Norm(x))
- "post" (original Transformer): Norm(x + F(x))
- "peri" (Peri-LN):          x + Norm_out(F(Norm_in(x))); the model also normalizes the
  embedding output (see `embedding_norm`)
- "mix"  (Mix-LN) is a model-level choice: Post-LN for the first layers, Pre-LN after;
  `GPTConfig.placement_per_layer` resolves it, so a block only sees the three above.

`residual_step` is the single place these rules are written; a block calls it once per
sublayer.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from seqlm.errors import ConfigError


def make_norm(kind: str, dim: int, *, eps: float, bias: bool) -> nn.Module:
    """A LayerNorm (with bias when `bias`) or an RMSNorm (scale only) over the last dim."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ConfigError(f"unknown norm {kind!r}; use layernorm or rmsnorm")


class SublayerNorms(nn.Module):
    """The norms one sublayer needs under one placement.

    `inner` normalizes the sublayer's input (pre, peri), `outer` its output (peri) or
    the residual sum (post). Absent norms are None, so no parameters exist for them
    and the state dict names only what the placement uses.
    """

    def __init__(self, placement: str, kind: str, dim: int, *, eps: float, bias: bool) -> None:
        super().__init__()
        if placement not in ("pre", "post", "peri"):
            raise ConfigError(f"unknown block norm placement {placement!r}")
        self.placement = placement
        uses_inner = placement in ("pre", "peri")
        uses_outer = placement in ("post", "peri")
        self.inner = make_norm(kind, dim, eps=eps, bias=bias) if uses_inner else None
        self.outer = make_norm(kind, dim, eps=eps, bias=bias) if uses_outer else None

    def residual_step(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        """Apply one residual sublayer under this placement.

        The branch added to the residual stream is the sublayer's output (pre, post) or
        the outer norm's output (peri): what layer dropping scales with a forward hook.
        """
        placement = self.placement
        if placement == "pre":
            return x + sublayer(self.inner(x))
        if placement == "peri":
            return x + self.outer(sublayer(self.inner(x)))
        return self.outer(x + sublayer(x))


def final_norm(placements: list[str], kind: str, dim: int, *, eps: float, bias: bool) -> nn.Module:
    """The norm before the LM head: absent (identity) when the last block is Post-LN.

    A Post-LN block already ends in a norm, so a second one would only rescale; every
    other placement leaves the residual stream unnormalized and needs it.
    """
    if placements and placements[-1] == "post":
        return nn.Identity()
    return make_norm(kind, dim, eps=eps, bias=bias)


def embedding_norm(
    placements: list[str], kind: str, dim: int, *, eps: float, bias: bool
) -> nn.Module | None:
    """A norm on the embedding output when the first block is Peri-LN, else None.

    Peri-LN branches add unit-scale (normalized) outputs to the residual stream; the
    raw embeddings (std 0.02) would be drowned by them and the current token all but
    invisible to later sublayers. Normalizing the embeddings, as the Peri-LN paper does,
    puts the token signal on the same scale. (Measured here: without it a 4-layer
    Peri-LN model stalls at the unigram loss on a repeated pattern.)
    """
    if placements and placements[0] == "peri":
        return make_norm(kind, dim, eps=eps, bias=bias)
    return None
