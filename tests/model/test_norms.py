"""Norm types and the three block-level placements."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlm.errors import ConfigError
from seqlm.model.norms import SublayerNorms, final_norm, make_norm


def test_make_norm_types() -> None:
    layer_norm = make_norm("layernorm", 6, eps=1e-5, bias=True)
    assert isinstance(layer_norm, nn.LayerNorm) and layer_norm.bias is not None
    assert make_norm("layernorm", 6, eps=1e-5, bias=False).bias is None
    rms = make_norm("rmsnorm", 6, eps=1e-5, bias=True)
    x = torch.randn(3, 6)
    with torch.no_grad():
        rms.weight.uniform_(0.5, 1.5)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * rms.weight
    torch.testing.assert_close(rms(x), expected)
    with pytest.raises(ConfigError):
        make_norm("groupnorm", 6, eps=1e-5, bias=True)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


@pytest.mark.parametrize("placement", ["pre", "post", "peri"])
def test_residual_step_follows_the_placement_formula(placement: str) -> None:
    torch.manual_seed(0)
    norms = SublayerNorms(placement, "layernorm", 8, eps=1e-5, bias=True)
    for parameter in norms.parameters():
        nn.init.normal_(parameter)
    sublayer = nn.Linear(8, 8)
    x = torch.randn(2, 3, 8)
    out = norms.residual_step(x, sublayer)
    if placement == "pre":
        expected = x + sublayer(layer_norm(x, norms.inner))
        assert norms.outer is None
    elif placement == "post":
        expected = layer_norm(x + sublayer(x), norms.outer)
        assert norms.inner is None
    else:
        expected = x + layer_norm(sublayer(layer_norm(x, norms.inner)), norms.outer)
    torch.testing.assert_close(out, expected)


def test_unknown_block_placement() -> None:
    with pytest.raises(ConfigError, match="mix"):
        SublayerNorms("mix", "layernorm", 4, eps=1e-5, bias=True)


def test_final_norm_is_absent_after_post_ln() -> None:
    assert isinstance(
        final_norm(["post", "post"], "layernorm", 4, eps=1e-5, bias=True), nn.Identity
    )
    assert isinstance(final_norm(["post", "pre"], "rmsnorm", 4, eps=1e-5, bias=True), nn.RMSNorm)
    assert isinstance(final_norm(["peri"], "layernorm", 4, eps=1e-5, bias=True), nn.LayerNorm)
