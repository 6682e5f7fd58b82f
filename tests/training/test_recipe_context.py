"""The recipe's rows per step (seqlm.training.recipe_context)."""

from __future__ import annotations

from seqlm.training.recipe import choose_recipe
from seqlm.training.recipe_basis import STEP_TOKENS, CorpusFacts, parse_budget
from seqlm.training.recipe_context import LONG_CONTEXT_ROWS, rows_per_step, rows_reason


def planted_like(p95: int) -> CorpusFacts:
    """A 3,000-sequence planted corpus as the recipe reads it (50-300 gaps: p95 300)."""
    return CorpusFacts(
        train_tokens=452_907,
        train_sequences=2_400,
        tuning_tokens=56_000,
        vocab_size=25,
        length_p50=p95 * 2 // 3,
        length_p95=p95,
        length_max=p95 + 11,
    )


def test_short_contexts_keep_about_step_tokens_a_step():
    assert [rows_per_step(c) for c in (32, 64, 128, 256)] == [32, 16, 8, 4]
    assert all(rows_per_step(c) * c == STEP_TOKENS for c in (32, 64, 128, 256))
    assert rows_reason(256) == f"about {STEP_TOKENS} tokens a step at context 256"


def test_long_contexts_get_at_least_the_long_context_rows():
    assert rows_per_step(512) == LONG_CONTEXT_ROWS == 8
    assert rows_per_step(8192) == LONG_CONTEXT_ROWS
    assert "at least 8 rows" in rows_reason(512) and "4,096 tokens" in rows_reason(512)


def test_the_recipe_uses_the_rows_and_counts_its_steps_by_them():
    long = choose_recipe(planted_like(300), parse_budget("2Mtok"))
    assert long.model["block_size"] == 512 and long.train["batch_size"] == 8
    assert "at least 8 rows" in long.reasons["batch_size"]
    # ~488 steps of 4,096 tokens: about 30 evaluations, so one every 16 steps.
    assert long.train["eval_every"] == max(10, 2_000_000 // (8 * 512) // 30)
    short = choose_recipe(planted_like(150), parse_budget("2Mtok"))
    assert short.model["block_size"] == 256 and short.train["batch_size"] == 4
