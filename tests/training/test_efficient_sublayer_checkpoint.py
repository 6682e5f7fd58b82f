"""Sublayer checkpointing: the plain model's loss and gradients, a fraction of what is
kept for the backward, and the attention kernel run once per bucket, not twice."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from seqlm.model import GPT, preset
from seqlm.model.positions import document_positions
from seqlm.training.efficient import sublayer_checkpoint
from seqlm.training.efficient.long_context_memory import lean_mlp, long_context_memory
from seqlm.training.efficient.sublayer_checkpoint import (
    checkpointed_sublayers,
    token_chunked_checkpoint,
)

LENGTH = 1100  # past BLOCKWISE_MIN_LENGTH: the documents go through block-wise attention


def _model(**overrides) -> GPT:
    settings = {
        "vocab_size": 40,
        "block_size": LENGTH,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 16,
        "positions": "rotary",
        "dropout": 0.0,
    }
    torch.manual_seed(0)
    return GPT(preset("micro", **{**settings, **overrides})).train()


def _batch() -> tuple[torch.Tensor, dict]:
    idx = torch.randint(0, 40, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    docs = torch.cat([torch.zeros(2, 700), torch.ones(2, 299), torch.full((2, 101), 2)], 1)
    docs = docs.long()
    return idx, {"doc_ids": docs, "position_ids": document_positions(docs)}


def _step(model: GPT, idx: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # dropout draws the same masks in both runs
    loss = model(idx, idx, **kwargs, return_logits=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(got: tuple, want: tuple) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
    for name, grad in want[1].items():
        torch.testing.assert_close(got[1][name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("norm_placement", ["pre", "peri", "post"])
@pytest.mark.parametrize("lean", [False, True])
def test_loss_and_gradients_equal_the_plain_model(monkeypatch, norm_placement, lean):
    # Chunks of 100 tokens (not dividing 2 x 1,100): the MLP's backward runs 22 chunks.
    monkeypatch.setattr(sublayer_checkpoint, "MLP_CHUNK_ELEMENTS", 100 * 64)
    model = _model(norm_placement=norm_placement)
    idx, kwargs = _batch()
    plain = _step(model, idx, kwargs)
    with checkpointed_sublayers(model) as wrapped:
        assert wrapped is model
        if lean:
            with lean_mlp(model):
                _assert_same(_step(model, idx, kwargs), plain)
        else:
            _assert_same(_step(model, idx, kwargs), plain)
    assert not any("forward" in vars(block) for block in model.blocks)  # restored


def test_dropout_falls_back_to_replayed_checkpointing_and_stays_exact():
    model = _model(dropout=0.1)
    idx, kwargs = _batch()
    plain = _step(model, idx, kwargs)
    with long_context_memory(model, checkpoint="sublayers"):
        _assert_same(_step(model, idx, kwargs), plain)


def test_forward_hooks_see_whole_tensors():
    model = _model()
    idx, kwargs = _batch()
    shapes = []
    model.blocks[0].mlp.register_forward_hook(lambda m, a, out: shapes.append(out.shape))
    plain = _step(model, idx, kwargs)
    with checkpointed_sublayers(model):
        _assert_same(_step(model, idx, kwargs), plain)
    # the plain step's call, then the checkpointed forward's (the recomputation may
    # stop before the hook): always the whole (B, T, C) output, never a chunk
    assert len(shapes) >= 2
    assert set(shapes) == {(2, LENGTH, 16)}


def _saved_bytes(model: GPT, idx: torch.Tensor, kwargs: dict) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, idx, **kwargs, return_logits=False)
    return sum(storages.values())


def test_each_sublayer_keeps_only_its_input():
    model = _model(n_embd=32, n_layer=3)
    idx, kwargs = _batch()
    plain = _saved_bytes(model, idx, kwargs)
    with checkpointed_sublayers(model):
        lean = _saved_bytes(model, idx, kwargs)
    row = 2 * LENGTH * 32 * 4  # one (B, T, C) float32 tensor
    # Per block the inputs of its two sublayers and the attention output (the fused
    # kernel of seqlm.kernels.projected_attention saves it); outside the blocks the final
    # norm's input and the chunked loss's hidden states and (N, V) pieces (a 40-token
    # vocabulary here).
    loss_pieces = 2 * (2 * LENGTH * 40 * 4)
    assert lean <= 3 * 3 * row + 2 * row + loss_pieces + row // 4
    assert plain > 3 * lean


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def test_the_attention_kernel_is_not_rerun_in_the_backward():
    model = _model()
    idx, kwargs = _batch()
    counts = {}
    for name, saver in (("plain", lean_mlp), ("sublayers", checkpointed_sublayers)):
        with saver(model), _CountOps() as counter:
            model(idx, idx, **kwargs, return_logits=False).loss.backward()
        counts[name] = {k: v for k, v in counter.counts.items() if "flash_attention" in k}
    # The CPU flash kernel: the plain model once per bucket and layer, the fused kernel
    # once per group, head and layer; its backward as often, never the forward again.
    for count in counts.values():
        kernel = "aten._scaled_dot_product_flash_attention_for_cpu"
        assert count[kernel] > 0
        assert count[kernel + "_backward"] == count[kernel]


def test_no_gradients_runs_the_plain_forward_and_deepcopies_bind_to_the_copy():
    model = _model()
    idx, kwargs = _batch()
    with checkpointed_sublayers(model):
        with torch.no_grad():
            assert model(idx, **kwargs).logits.grad_fn is None
        twin = copy.deepcopy(model)
        assert twin.blocks[0].forward.__self__ is twin.blocks[0]


def test_token_chunked_checkpoint_matches_autograd():
    generator = torch.Generator().manual_seed(3)
    layer = torch.nn.Sequential(torch.nn.LayerNorm(6), torch.nn.Linear(6, 24), torch.nn.GELU())
    x = torch.randn(5, 7, 6, generator=generator, requires_grad=True)
    weights = torch.randn(5, 7, 24, generator=generator)
    (layer(x) * weights).sum().backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad(set_to_none=True)
    y = token_chunked_checkpoint(layer, x, list(layer.parameters()), chunk_tokens=4)
    assert y.shape == (5, 7, 24)
    (y * weights).sum().backward()
    got = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(token_chunked_checkpoint(layer, x, [], 4), layer(x))


def test_unknown_checkpoint_choice_is_refused():
    model = _model()
    with (
        pytest.raises(ValueError, match="checkpoint must be one of"),
        long_context_memory(model, checkpoint="layers"),
    ):
        pass


def test_a_loss_other_than_the_kernels_is_kept_and_trains():
    model = _model(loss_impl="dense")
    idx, kwargs = _batch()
    want = _step(model, idx, kwargs)
    loss_fn = model.loss_fn
    with checkpointed_sublayers(model):
        assert model.loss_fn is loss_fn
        got = _step(model, idx, kwargs)
    _assert_same(got, want)


def test_the_kernel_loss_runs_in_small_chunks_from_the_heap_and_is_restored():
    model = _model()
    idx, kwargs = _batch()
    want = _step(model, idx, kwargs)
    loss_fn = model.loss_fn
    with checkpointed_sublayers(model):
        assert model.loss_fn is not loss_fn
        got = _step(model, idx, kwargs)
    assert model.loss_fn is loss_fn
    _assert_same(got, want)
