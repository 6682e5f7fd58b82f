"""The cached forward gives the model's own logits, for every variant the GPT supports."""

from __future__ import annotations

import pytest
import torch
from helpers.eval_fixtures import tiny_gpt  # noqa: F401 (autouse fixture)

from seqlm.errors import ConfigError
from seqlm.evaluation.kv_cache import KVCache, cached_forward
from seqlm.evaluation.lstm import LSTMConfig, LSTMLanguageModel

VARIANTS = [
    {},
    {"positions": "rotary"},
    {"norm_placement": "post"},
    {"norm_placement": "peri", "norm": "rmsnorm"},
    {"norm_placement": "mix", "n_layer": 4},
    {"attention_span": 5},
    {"layer_spans": [3, None], "positions": "rotary"},
    {"tie_embeddings": False, "bias": False},
]


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())) or "default"
)
def test_prefill_then_steps_match_the_full_forward(variant: dict) -> None:
    # float64: the cached path must equal the full forward up to rounding; in float32 the
    # different summation order (chunks vs one pass) differs by ~3e-5 on some CPUs.
    model = tiny_gpt(seed=1, **variant).double()
    idx = torch.randint(0, 30, (3, 16), generator=torch.Generator().manual_seed(0))
    expected = model(idx).logits
    cache = KVCache.empty(model, 3)
    parts = [cached_forward(model, idx[:, :6], cache)]
    parts += [cached_forward(model, idx[:, t : t + 1], cache) for t in range(6, 11)]
    parts.append(cached_forward(model, idx[:, 11:], cache))  # a chunk after steps
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, atol=1e-10, rtol=1e-10)


def test_expand_copies_a_prompt_and_rows_can_be_dropped() -> None:
    model = tiny_gpt()
    prompt = torch.tensor([[1, 5, 6, 7]])
    cache = KVCache.empty(model, 1)
    cached_forward(model, prompt, cache)
    wide = cache.expand(4)
    assert wide.batch == 4 and wide.length == 4
    nxt = torch.tensor([[8], [9], [10], [11]])
    logits = cached_forward(model, nxt, wide)[:, -1]
    full = model(torch.cat([prompt.expand(4, -1), nxt], dim=1)).logits[:, -1]
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
    wide.keep_rows(torch.tensor([1, 3]))
    assert wide.batch == 2
    after = cached_forward(model, torch.tensor([[12], [13]]), wide)[:, -1]
    rows = torch.cat([prompt.expand(2, -1), torch.tensor([[9, 12], [11, 13]])], dim=1)
    torch.testing.assert_close(after, model(rows).logits[:, -1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="one-row"):
        wide.expand(3)


def test_misuse_raises_config_errors() -> None:
    model = tiny_gpt()
    cache = KVCache.empty(model, 1)
    with pytest.raises(ConfigError, match="block_size"):
        cached_forward(model, torch.zeros(1, 17, dtype=torch.long), cache)
    with pytest.raises(ConfigError, match="rows"):
        cached_forward(model, torch.zeros(2, 3, dtype=torch.long), cache)
    model.train()
    with pytest.raises(ConfigError, match="eval"):
        cached_forward(model, torch.zeros(1, 3, dtype=torch.long), cache)
    lstm = LSTMLanguageModel(LSTMConfig(vocab_size=30, n_embd=8))
    with pytest.raises(ConfigError, match="GPT"):
        cached_forward(lstm, torch.zeros(1, 3, dtype=torch.long), cache)
