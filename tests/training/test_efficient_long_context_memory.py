"""Lean MLP and activation checkpointing: same loss and gradients, less kept for backward."""

from __future__ import annotations

import copy

import torch
from helpers.model_helpers import randomized, tiny_config

from seqlm.model import GPT, preset
from seqlm.model.positions import document_positions
from seqlm.training.efficient.long_context_memory import (
    checkpointed_blocks,
    lean_mlp,
    long_context_memory,
    use_lean_mlp,
)


def _step(model: GPT, idx: torch.Tensor, **kwargs) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # dropout draws the same masks in both runs
    loss = model(idx, idx, **kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_loss_and_gradients_equal_the_plain_model_with_documents_and_dropout():
    config = preset(
        "micro", vocab_size=40, block_size=96, n_layer=3, n_head=2, n_embd=16, dropout=0.1
    )
    torch.manual_seed(0)
    model = GPT(config).train()
    idx = torch.randint(0, 40, (2, 96), generator=torch.Generator().manual_seed(1))
    docs = torch.cat([torch.zeros(2, 40), torch.ones(2, 56)], dim=1).long()
    kwargs = {"doc_ids": docs, "position_ids": document_positions(docs)}
    plain_loss, plain_grads = _step(model, idx, **kwargs)
    for saver in (checkpointed_blocks, lean_mlp, long_context_memory):
        with saver(model) if saver is not long_context_memory else saver(model, checkpoint=True):
            loss, grads = _step(model, idx, **kwargs)
        torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-6)
        for name, grad in plain_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_only_block_inputs_are_kept_and_the_model_is_restored():
    model = randomized(tiny_config(n_layer=3)).train()
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(2))
    keys = set(model.state_dict())

    def saved_count() -> int:
        saved: list[torch.Tensor] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            model(idx, idx)
        return len(saved)

    plain = saved_count()
    with lean_mlp(model):
        lean = saved_count()
    with checkpointed_blocks(model) as wrapped:
        assert wrapped is model
        assert set(model.state_dict()) == keys  # checkpoints load and save unchanged
        checkpointed = saved_count()
        with torch.no_grad():  # eval-style calls run the plain forward
            assert model(idx).logits.grad_fn is None
    assert lean == plain - 3  # per block one tensor fewer: gelu(h) is recomputed
    assert checkpointed < lean
    assert not any("forward" in vars(m) for block in model.blocks for m in (block, block.mlp))
    assert saved_count() == plain


def test_use_lean_mlp_is_exact_and_survives_a_deepcopy():
    config = preset("micro", vocab_size=30, block_size=32, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(0, 30, (2, 32), generator=torch.Generator().manual_seed(4))
    plain_loss, plain_grads = _step(model, idx)
    assert use_lean_mlp(model) and use_lean_mlp(model)  # a second call changes nothing
    loss, grads = _step(model, idx)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.mul_(2.0)
    assert twin.blocks[0].mlp.forward.__self__ is twin.blocks[0].mlp
    assert not torch.allclose(twin(idx, idx).loss, model(idx, idx).loss)
    assert not use_lean_mlp(torch.nn.Linear(2, 2))  # not a GPT: left alone
