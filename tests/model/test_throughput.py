"""Training-step cost against the plain nanoGPT-style reference loop.

The op-count check is fast and exact: the default GPT's forward + backward runs the
same aten ops, as many times, as the reference model's. The timing check is slow.

The acceptance bar for the model: with no document mask and no span, seqlm's default
GPT must cost no more per step (forward, backward, clip, AdamW) than the reference
loop's model on the same shape and batches. Both run in this process, interleaved,
so machine load hits both alike; medians are compared with a 10% allowance for noise.

    python -m pytest -q -m slow tests/model/test_throughput.py
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from seqlm.model import GPT, GPTConfig

REFERENCE_LOOP = Path(__file__).resolve().parents[3] / "shared" / "bench" / "reference_loop.py"
LAYERS, HEADS, WIDTH, BATCH, STEPS, ROUNDS = 4, 4, 128, 12, 10, 5


def load_reference():
    if not REFERENCE_LOOP.exists():
        pytest.skip(f"reference loop not available: {REFERENCE_LOOP}")
    spec = importlib.util.spec_from_file_location("reference_loop", REFERENCE_LOOP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def aten_op_counts(step) -> Counter:
    step()  # first call outside the profile: lazy initialisation is not the step's work
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return Counter({event.key: event.count for event in prof.key_averages()})


@pytest.mark.parametrize("block", [64, 256])
def test_default_gpt_runs_exactly_the_reference_ops(block: int) -> None:
    reference = load_reference()
    torch.manual_seed(0)
    theirs = reference.GPT(11, block, LAYERS, HEADS, WIDTH)
    ours = GPT(
        GPTConfig(vocab_size=11, n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, block_size=block)
    )
    # the op list does not depend on the batch size; a small batch keeps this fast
    x = torch.randint(0, 11, (2, block))
    y = torch.randint(0, 11, (2, block))
    ops_theirs = aten_op_counts(lambda: theirs(x, y).backward())
    ops_ours = aten_op_counts(lambda: ours(x, y).loss.backward())
    assert ops_theirs["aten::_scaled_dot_product_flash_attention_for_cpu"] == LAYERS
    assert ops_ours == ops_theirs


def test_masks_are_built_only_when_asked_for_and_once_per_forward() -> None:
    x = torch.randint(0, 11, (2, 8))
    docs = torch.tensor([[0] * 4 + [1] * 4] * 2)
    eq_counts = []
    for n_layer in (2, 4):
        model = GPT(GPTConfig(vocab_size=11, n_layer=n_layer, n_head=2, n_embd=16, block_size=8))
        plain = aten_op_counts(lambda model=model: model(x))
        assert plain["aten::eq"] == 0 and plain["aten::le"] == 0  # is_causal, no mask
        eq_counts.append(aten_op_counts(lambda model=model: model(x, doc_ids=docs))["aten::eq"])
    assert eq_counts[0] >= 1
    assert eq_counts[0] == eq_counts[1]  # shared by the layers, not rebuilt per layer


def step_timer(model, call, batches):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

    def run() -> float:
        start = time.perf_counter()
        for x, y in batches:
            loss = call(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return (time.perf_counter() - start) / len(batches)

    return run


@pytest.mark.slow
@pytest.mark.parametrize("block", [64, 256])
def test_default_gpt_step_costs_no_more_than_the_reference(finch_lesions: Path, block: int) -> None:
    reference = load_reference()
    song = (finch_lesions / "bird1_prelesion").read_text().strip()
    alphabet = sorted(set(song))
    data = np.array([alphabet.index(c) for c in song], dtype=np.int64)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(STEPS):
        starts = rng.integers(0, len(data) - block - 1, BATCH)
        window = torch.from_numpy(np.stack([data[s : s + block + 1] for s in starts]))
        batches.append((window[:, :-1], window[:, 1:]))

    torch.manual_seed(0)
    theirs = reference.GPT(len(alphabet), block, LAYERS, HEADS, WIDTH)
    ours = GPT(
        GPTConfig(
            vocab_size=len(alphabet), n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, block_size=block
        )
    )
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    run_theirs = step_timer(theirs, lambda m, x, y: m(x, y), batches)
    run_ours = step_timer(ours, lambda m, x, y: m(x, y).loss, batches)
    run_theirs(), run_ours()  # warm-up
    times_theirs, times_ours = [], []
    for round_index in range(ROUNDS):
        pair = [(run_theirs, times_theirs), (run_ours, times_ours)]
        for run, times in pair if round_index % 2 == 0 else pair[::-1]:
            times.append(run())
    ratio = float(np.median(times_ours) / np.median(times_theirs))
    assert ratio <= 1.10, f"seqlm step {ratio:.3f}x the reference's at T={block}"
