"""The fused norm + q/k/v projection + rotary + document attention kernel against its
dense reference (the model's own ops with a dense boolean mask): outputs and every
gradient, odd lengths, many short documents, one long one, split groups."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from seqlm.kernels import projected_attention as kernel
from seqlm.kernels.lazy_mask import dense_attention_mask
from seqlm.kernels.projected_attention import projected_attention
from seqlm.model.positions import apply_rotary, document_positions

HEADS, WIDTH = 4, 32


def _reference(x, weight, bias, doc_ids, rotary, norm):
    batch, length, width = x.shape
    d = width // HEADS
    h = x if norm is None else norm(x)
    q, k, v = F.linear(h, weight, bias).split(width, dim=2)
    q, k, v = (t.view(batch, length, HEADS, d).transpose(1, 2) for t in (q, k, v))
    if rotary is not None:
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
    mask = dense_attention_mask(length, doc_ids, None, "cpu")
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(batch, length, width)


def _layout(kind: str, batch: int, length: int) -> torch.Tensor | None:
    generator = torch.Generator().manual_seed(7)
    if kind == "none":
        return None
    if kind == "one long":
        return torch.zeros(batch, length, dtype=torch.long)
    cuts_per_row = {"many short": length // 3, "odd": 5}[kind]
    rows = []
    for _ in range(batch):
        cuts = torch.randperm(length - 1, generator=generator)[:cuts_per_row] + 1
        starts = torch.zeros(length, dtype=torch.long)
        starts[cuts] = 1
        rows.append(starts.cumsum(0))
    return torch.stack(rows)


def _inputs(dtype, batch, length, *, bias=True, norm="layernorm", positions="shared"):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(batch, length, WIDTH, generator=generator, dtype=dtype).requires_grad_()
    weight = (
        torch.randn(3 * WIDTH, WIDTH, generator=generator, dtype=dtype) * 0.3
    ).requires_grad_()
    b = torch.randn(3 * WIDTH, generator=generator, dtype=dtype).requires_grad_() if bias else None
    module = None
    if norm == "layernorm":
        module = torch.nn.LayerNorm(WIDTH, dtype=dtype)
    elif norm == "rmsnorm":
        module = torch.nn.RMSNorm(WIDTH, dtype=dtype)
    if module is not None:
        with torch.no_grad():
            for p in module.parameters():
                p.uniform_(0.5, 1.5, generator=generator)
    return x, weight, b, module


def _rotary(dtype, batch, length, doc_ids, positions):
    if positions == "none":
        return None
    half = WIDTH // HEADS // 2
    angles = torch.randn(length, half, generator=torch.Generator().manual_seed(5), dtype=dtype)
    if positions == "per document":
        ids = document_positions(doc_ids) if doc_ids is not None else None
        pos = ids if ids is not None else torch.arange(length).expand(batch, length)
        angles = pos[..., None].to(dtype) * torch.linspace(0.01, 1.0, half, dtype=dtype)
        return angles.cos()[:, None], angles.sin()[:, None]
    return angles.cos(), angles.sin()


def _run(fn, tensors, grad_out):
    for t in tensors:
        t.grad = None
    y = fn()
    (y * grad_out).sum().backward()
    return y.detach(), [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("layout", ["none", "one long", "many short", "odd"])
@pytest.mark.parametrize(
    ("norm", "bias", "positions"),
    [("layernorm", True, "shared"), ("rmsnorm", False, "per document"), (None, True, "none")],
)
def test_outputs_and_gradients_equal_the_dense_reference(layout, norm, bias, positions):
    dtype, batch, length = torch.float64, 2, 301
    doc_ids = _layout(layout, batch, length)
    x, weight, b, module = _inputs(dtype, batch, length, bias=bias, norm=norm)
    rotary = _rotary(dtype, batch, length, doc_ids, positions)
    params = [] if module is None else list(module.parameters())
    tensors = [x, weight, *([b] if b is not None else []), *params]
    grad_out = torch.randn(batch, length, WIDTH, dtype=dtype)
    want = _run(lambda: _reference(x, weight, b, doc_ids, rotary, module), tensors, grad_out)
    got = _run(
        lambda: projected_attention(
            x, weight, b, HEADS, doc_ids, rotary, norm=module, norm_params=params
        ),
        tensors,
        grad_out,
    )
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-10)
    for a, c in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-9)


def test_float32_within_the_issue_tolerances_with_groups_split(monkeypatch):
    # Groups of at most 64 padded tokens: many segments per bucket are split by rows.
    monkeypatch.setattr(kernel, "GROUP_TOKENS", 64)
    batch, length = 3, 517
    doc_ids = _layout("many short", batch, length)
    x, weight, b, module = _inputs(torch.float32, batch, length)
    rotary = _rotary(torch.float32, batch, length, doc_ids, "shared")
    params = list(module.parameters())
    tensors = [x, weight, b, *params]
    grad_out = torch.randn(batch, length, WIDTH)
    want = _run(lambda: _reference(x, weight, b, doc_ids, rotary, module), tensors, grad_out)
    got = _run(
        lambda: projected_attention(
            x, weight, b, HEADS, doc_ids, rotary, norm=module, norm_params=params
        ),
        tensors,
        grad_out,
    )
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
    for a, c in zip(got[1], want[1], strict=True):
        # Sums over 1,551 tokens of unit-scale gradients: float32 rounding relative to
        # the largest entry.
        torch.testing.assert_close(a, c, rtol=0, atol=1e-5 * float(c.abs().max()))


def test_group_plan_covers_every_position_once(monkeypatch):
    doc_ids = _layout("many short", 2, 257)
    groups = kernel._plan(doc_ids, 2, 257, 40)
    written = torch.cat([g.write[g.real] for g in groups])
    assert sorted(written.tolist()) == list(range(2 * 257))
    assert all(g.read.numel() <= 40 or g.read.shape[0] == 1 for g in groups)
    assert all(bool((g.write[~g.real] == 2 * 257).all()) for g in groups)


def test_only_the_input_output_and_log_sum_exp_are_kept():
    batch, length = 2, 400
    x, weight, b, module = _inputs(torch.float32, batch, length)
    doc_ids = _layout("odd", batch, length)
    saved = []

    def pack(tensor):
        saved.append(tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        projected_attention(x, weight, b, HEADS, doc_ids, norm=module, norm_params=[])
    row = batch * length * WIDTH * 4
    assert len(saved) == 2  # x and the output (with its spare padding row)
    assert sum(saved) <= 2 * row + WIDTH * 4


def test_refuses_a_weight_that_does_not_fit():
    x = torch.randn(1, 8, WIDTH)
    with pytest.raises(ValueError, match="does not fit"):
        projected_attention(x, torch.randn(WIDTH, WIDTH), None, HEADS)


def test_block_form_equals_rest_of_the_reference_heads(monkeypatch):
    # rest: output projection, residual, a per-token MLP; chunks of 50 rows, groups of 64.
    monkeypatch.setattr(kernel, "GROUP_TOKENS", 64)
    dtype, batch, length = torch.float64, 2, 301
    doc_ids = _layout("many short", batch, length)
    x, weight, b, module = _inputs(dtype, batch, length)
    rotary = _rotary(dtype, batch, length, doc_ids, "per document")
    proj = torch.nn.Linear(WIDTH, WIDTH, dtype=dtype)
    mlp = torch.nn.Sequential(
        torch.nn.LayerNorm(WIDTH, dtype=dtype),
        torch.nn.Linear(WIDTH, 4 * WIDTH, dtype=dtype),
        torch.nn.GELU(),
        torch.nn.Linear(4 * WIDTH, WIDTH, dtype=dtype),
    )

    def rest(h, a):
        h = h + proj(a)
        return h + mlp(h)

    norm_params = list(module.parameters())
    rest_params = [*proj.parameters(), *mlp.parameters()]
    tensors = [x, weight, b, *norm_params, *rest_params]
    grad_out = torch.randn(batch, length, WIDTH, dtype=dtype)
    want = _run(
        lambda: rest(x, _reference(x, weight, b, doc_ids, rotary, module)), tensors, grad_out
    )
    got = _run(
        lambda: kernel.projected_attention_block(
            x,
            weight,
            b,
            HEADS,
            doc_ids,
            rotary,
            rest,
            rest_params,
            chunk_tokens=50,
            norm=module,
            norm_params=norm_params,
        ),
        tensors,
        grad_out,
    )
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-10)
    for a, c in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-9)
    with torch.no_grad():
        plain = kernel.projected_attention_block(
            x,
            weight,
            b,
            HEADS,
            doc_ids,
            rotary,
            rest,
            rest_params,
            chunk_tokens=50,
            norm=module,
            norm_params=norm_params,
        )
    torch.testing.assert_close(plain, want[0], rtol=0, atol=1e-10)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mapped_while_alive(elements: int) -> int:
    """Bytes glibc holds in its own memory maps grow by this much while a float tensor
    of `elements` is alive."""
    mallinfo2 = kernel.glibc_function("mallinfo2")
    mallinfo2.restype = _MallInfo2
    before = mallinfo2().hblkhd
    tensor = torch.ones(elements)
    grown = mallinfo2().hblkhd - before
    del tensor
    return grown


def _check_heap_allocations() -> None:
    four_mib = 1 << 20  # float32 elements
    assert kernel.fix_mmap_threshold(1 << 20)
    assert _mapped_while_alive(four_mib) >= 4 << 20  # its own map under the fixed threshold
    with kernel.heap_allocations():
        assert _mapped_while_alive(four_mib) == 0  # from the heap
    assert _mapped_while_alive(four_mib) >= 4 << 20  # the fixed threshold is back
    with kernel.heap_allocations(threshold=None):  # the threshold kept, only no trimming
        assert _mapped_while_alive(four_mib) >= 4 << 20


@pytest.mark.skipif(kernel.glibc_function("mallinfo2") is None, reason="glibc's malloc only")
def test_heap_allocations_takes_large_tensors_from_the_heap_then_maps_them_again():
    # In a fresh interpreter: glibc serves a large request from a free heap chunk when
    # one fits, whatever the threshold, and a long test session leaves many behind.
    done = subprocess.run(
        [sys.executable, __file__, "--heap-check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def _check_trim_threshold_kept() -> None:
    """Under MALLOC_TRIM_THRESHOLD_ = 1 GiB the heap keeps a freed chunk at its top
    after `heap_allocations` as before it (glibc's default 128 KiB would trim it)."""
    mallinfo2 = kernel.glibc_function("mallinfo2")
    mallinfo2.restype = _MallInfo2
    assert kernel.fix_mmap_threshold(64 << 20)  # 48 MiB blocks come from the heap
    with kernel.heap_allocations():
        pass
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    # 48 MiB: larger than any free heap chunk, so it extends the heap's top; malloc and
    # free straight from libc, so nothing else lands above it in between.
    block = libc.malloc(48 << 20)
    alive = mallinfo2().arena
    libc.free(block)
    assert mallinfo2().arena >= alive  # the heap not shrunk: the user's threshold holds


@pytest.mark.skipif(kernel.glibc_function("mallinfo2") is None, reason="glibc's malloc only")
def test_heap_allocations_gives_back_the_users_trim_threshold():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    done = subprocess.run(
        [sys.executable, __file__, "--trim-check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr


if __name__ == "__main__" and sys.argv[1:] == ["--heap-check"]:
    _check_heap_allocations()
if __name__ == "__main__" and sys.argv[1:] == ["--trim-check"]:
    _check_trim_threshold_kept()
