"""The forward with a KV cache gives the forward's own logits, for every model variant."""

from __future__ import annotations

import pytest
import torch
from helpers.eval_fixtures import tiny_gpt  # noqa: F401 (autouse fixture)

from seqlm.analysis.head_gates import gated_heads
from seqlm.errors import ConfigError
from seqlm.model import GPT, KVCache, document_positions

VARIANTS = [
    {},
    {"positions": "rotary"},
    {"norm_placement": "post"},
    {"norm_placement": "peri", "norm": "rmsnorm"},
    {"norm_placement": "mix", "n_layer": 4},
    {"attention_span": 5},
    {"attention_span": 1},
    {"layer_spans": [3, None], "positions": "rotary"},
    {"tie_embeddings": False, "bias": False},
    {"positions": "alibi"},
    {"positions": "alibi", "attention_span": 5},
]
# New tokens per call: a prefill, single steps, then a chunk after steps.
CHUNKS = [6, 1, 1, 1, 1, 1, 5]


def _ids(variant: dict) -> str:
    return ",".join(map(str, variant.values())) or "default"


def _cached_logits(model: GPT, idx: torch.Tensor, **per_token: torch.Tensor) -> torch.Tensor:
    """Logits of `idx` fed through a cache in CHUNKS (per-token inputs sliced alike)."""
    cache = KVCache.empty(model, idx.shape[0])
    parts, start = [], 0
    for count in CHUNKS:
        stop = start + count
        sliced = {name: value[:, start:stop] for name, value in per_token.items()}
        parts.append(model(idx[:, start:stop], cache=cache, **sliced).logits)
        start = stop
    assert cache.length == idx.shape[1] == start
    return torch.cat(parts, dim=1)


def _model(seed: int, **variant) -> GPT:
    # float64: the cached path must equal the full forward up to rounding; in float32 the
    # different summation order (chunks vs one pass) differs by ~3e-5 on some CPUs.
    return tiny_gpt(seed=seed, **variant).double()


def _tokens(rows: int = 3) -> torch.Tensor:
    return torch.randint(0, 30, (rows, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_prefill_then_steps_match_the_full_forward(variant: dict) -> None:
    model = _model(1, **variant)
    idx = _tokens()
    expected = model(idx).logits
    torch.testing.assert_close(_cached_logits(model, idx), expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    "variant", [*VARIANTS[:3], *(VARIANTS[i] for i in (5, 7, 9, 10))], ids=_ids
)
def test_documents_in_packed_rows_match_the_full_forward(variant: dict) -> None:
    model = _model(2, **variant)
    idx = _tokens()
    doc_ids = torch.tensor([[0] * 5 + [1] * 7 + [2] * 4, [0] * 16, [0] * 7 + [1] * 9])
    positions = document_positions(doc_ids)
    for extra in ({"doc_ids": doc_ids}, {"doc_ids": doc_ids, "position_ids": positions}):
        expected = model(idx, **extra).logits
        got = _cached_logits(model, idx, **extra)
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    assert (model(idx, doc_ids=doc_ids).logits - model(idx).logits).abs().max() > 1e-3


@pytest.mark.parametrize("variant", [{}, {"positions": "rotary", "attention_span": 4}], ids=_ids)
def test_head_gates_act_the_same_with_a_cache(variant: dict) -> None:
    model = _model(3, **variant)
    idx = _tokens()
    gates = torch.rand(2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with gated_heads(model, gates):
        expected = model(idx).logits
        got = _cached_logits(model, idx)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    assert (expected - model(idx).logits).abs().max() > 1e-3


def test_expand_copies_a_prompt_and_rows_can_be_dropped() -> None:
    model = tiny_gpt()
    prompt = torch.tensor([[1, 5, 6, 7]])
    cache = KVCache.empty(model, 1)
    model(prompt, cache=cache)
    wide = cache.expand(4)
    assert wide.batch == 4 and wide.length == 4
    nxt = torch.tensor([[8], [9], [10], [11]])
    logits = model(nxt, cache=wide).logits[:, -1]
    full = model(torch.cat([prompt.expand(4, -1), nxt], dim=1)).logits[:, -1]
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
    wide.keep_rows(torch.tensor([1, 3]))
    assert wide.batch == 2
    after = model(torch.tensor([[12], [13]]), cache=wide).logits[:, -1]
    rows = torch.cat([prompt.expand(2, -1), torch.tensor([[9, 12], [11, 13]])], dim=1)
    torch.testing.assert_close(after, model(rows).logits[:, -1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="one-row"):
        wide.expand(3)


def test_misuse_raises_config_errors() -> None:
    model = tiny_gpt()
    cache = KVCache.empty(model, 1)
    with pytest.raises(ConfigError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="rows"):
        model(torch.zeros(2, 3, dtype=torch.long), cache=cache)
    model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="doc_ids"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache, doc_ids=torch.zeros(1, 1))
    model.train()
    with pytest.raises(ConfigError, match="eval"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    deeper = tiny_gpt(n_layer=3)
    with pytest.raises(ConfigError, match="layers"):
        deeper(torch.zeros(1, 1, dtype=torch.long), cache=KVCache.empty(model, 1))
