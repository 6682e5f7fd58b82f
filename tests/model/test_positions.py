"""Rotary and learned positions, and positions restarting per packed document."""

from __future__ import annotations

import math

import torch

from seqlm.model.positions import (
    LearnedPositions,
    RotaryPositions,
    apply_rotary,
    document_positions,
)


def rotate_by_hand(x: torch.Tensor, position: int, base: float = 10000.0) -> torch.Tensor:
    """Rotate one head vector: pair (c, c + d/2) by angle position * base^(-2c/d)."""
    d = x.shape[-1]
    out = x.clone()
    for c in range(d // 2):
        angle = position * base ** (-2 * c / d)
        a, b = x[c].item(), x[c + d // 2].item()
        out[c] = a * math.cos(angle) - b * math.sin(angle)
        out[c + d // 2] = a * math.sin(angle) + b * math.cos(angle)
    return out


def test_rotary_matches_hand_rotation() -> None:
    torch.manual_seed(0)
    rotary = RotaryPositions(head_dim=8, block_size=16)
    x = torch.randn(1, 1, 16, 8)
    cos, sin = rotary(16, None)
    rotated = apply_rotary(x, cos, sin)
    for position in (0, 1, 7, 15):
        expected = rotate_by_hand(x[0, 0, position], position)
        torch.testing.assert_close(rotated[0, 0, position], expected, atol=1e-6, rtol=0)


def test_rotary_dot_product_depends_only_on_offset() -> None:
    torch.manual_seed(1)
    rotary = RotaryPositions(head_dim=16, block_size=64)
    q = torch.randn(16)
    k = torch.randn(16)
    cos, sin = rotary(64, None)

    def score(query_pos: int, key_pos: int) -> float:
        rq = apply_rotary(q.view(1, 1, 1, 16), cos[query_pos], sin[query_pos])
        rk = apply_rotary(k.view(1, 1, 1, 16), cos[key_pos], sin[key_pos])
        return (rq * rk).sum().item()

    for offset in (0, 3, 11):
        reference = score(offset, 0)
        for shift in (1, 9, 40):
            assert math.isclose(score(offset + shift, shift), reference, abs_tol=1e-5)
    # and it does depend on the offset (else positions would carry nothing)
    assert abs(score(5, 0) - score(6, 0)) > 1e-3


def test_rotary_preserves_norm_and_uses_position_ids() -> None:
    torch.manual_seed(2)
    rotary = RotaryPositions(head_dim=8, block_size=10)
    x = torch.randn(2, 3, 5, 8)
    position_ids = torch.tensor([[0, 1, 2, 0, 1], [4, 5, 6, 7, 8]])
    cos, sin = rotary(5, position_ids)
    assert cos.shape == (2, 1, 5, 4)
    rotated = apply_rotary(x, cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    plain_cos, plain_sin = rotary(10, None)
    # row 1, token 2 is at position 6
    expected = apply_rotary(x[1:2, :, 2:3], plain_cos[6:7], plain_sin[6:7])
    torch.testing.assert_close(rotated[1:2, :, 2:3], expected)


def test_learned_positions_lookup() -> None:
    table = LearnedPositions(block_size=6, dim=4)
    plain = table(3, None, torch.device("cpu"))
    assert plain.shape == (3, 4)
    torch.testing.assert_close(plain, table.embedding.weight[:3])
    ids = torch.tensor([[0, 1, 0]])
    torch.testing.assert_close(table(3, ids, torch.device("cpu"))[0, 2], table.embedding.weight[0])


def test_document_positions_restart_at_each_document() -> None:
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5], [1, 2, 2, 1, 1, 1]])
    expected = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5], [0, 0, 1, 0, 1, 2]])
    assert torch.equal(document_positions(doc_ids), expected)
