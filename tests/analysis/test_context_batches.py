"""The window batches of the span and head analyses: context-only (conditioning) targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.planted_dependency import random_sequences

from seqlm.analysis.context_batches import batch_log_probs, context_batches
from seqlm.evaluation.scores import prediction_targets
from seqlm.model import GPT, GPTConfig

CONDITION_ID = 5


def scored(model: GPT, targets, **options) -> dict[int, float]:
    values = {}
    with torch.no_grad():
        for batch in context_batches(targets, context=8, batch_tokens=24, **options):
            for target, value in zip(batch.target, batch_log_probs(model, batch), strict=True):
                assert int(target) not in values  # every target at most once
                values[int(target)] = float(value)
    return values


@pytest.mark.parametrize("truncation", [None, 2])
def test_context_only_targets_are_read_never_kept(truncation) -> None:
    """Issue 13 item 3: a [COND] target is never a kept prediction; every other target is
    kept with the value it had: exactly with full context (the same windows and batches),
    to rounding when truncated (the batches hold fewer rows)."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=12, n_layer=2, n_head=2, n_embd=16, block_size=8)
    model = GPT(config).eval()
    sequences = random_sequences([4, 7, 11, 19])  # 11 and 19 need several windows
    for seq in sequences:
        seq[1] = CONDITION_ID  # the prefix `seqlm corpus condition` writes
        seq[len(seq) // 2] = CONDITION_ID  # and one later, past any truncation
    targets = prediction_targets(sequences, 12)
    every = scored(model, targets, truncation=truncation)
    without = scored(model, targets, truncation=truncation, context_only_ids=[CONDITION_ID])
    is_condition = targets.token == CONDITION_ID
    assert is_condition.sum() >= len(sequences)
    assert any(is_condition[t] for t in every)  # the old reading kept them
    assert sorted(without) == [t for t in sorted(every) if not is_condition[t]]
    tolerance = 0.0 if truncation is None else 1e-6
    for t, value in without.items():
        assert value == pytest.approx(every[t], abs=tolerance), t
    assert np.isin(targets.flat_tokens, [CONDITION_ID]).sum() == is_condition.sum()
