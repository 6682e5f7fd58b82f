"""The recipe's rows per step: about `STEP_TOKENS` tokens a step, but never fewer than
`LONG_CONTEXT_ROWS` windows once the context is long (docs/training.md, "Long-range
dependencies").

Why: a dependency far back is learnt from few targets (a planted one: 1-2% of them), and
an untrained head spreads its attention over every earlier token, so the gradient that
points at the far token is a small part of a noisy step. At context 512 the token rule
alone gives 2 rows (about 5 sequences of 50-300 tokens, 20 planted targets) a step:
the 50-300 planted corpus stayed at chance for 4M tokens that way, and was found within
2M tokens with 8 rows a step (the same model; seed 0 - a second corpus seed was not
found in 2M, so this helps, not guarantees). Up to context 256 the token
rule is kept: 4 rows of 256 found 50-150 gaps, and a larger step on the 48k-token local
corpus was worse (16 rows: +0.022 nats against the n-gram where 4 rows gave +0.015).

Session 6 (docs/training.md, "Planted structure"): 16 rows, lr 1e-2 and learned
positions did not find 50-300 on seed 1 in 2M tokens; 4M tokens did not find 50-500
(seed 1 at chance, seed 0's later answers leaving chance after 3M tokens). No candidate
found the dependency where this rule fails, so the rule is unchanged.
"""

from __future__ import annotations

from seqlm.training.recipe_basis import STEP_TOKENS

LONG_CONTEXT = 512
LONG_CONTEXT_ROWS = 8


def rows_per_step(context: int) -> int:
    """Rows (windows of `context` tokens) in one optimizer step."""
    rows = max(1, STEP_TOKENS // context)
    if context >= LONG_CONTEXT:
        rows = max(rows, LONG_CONTEXT_ROWS)
    return rows


def rows_reason(context: int) -> str:
    """The reason recorded in recipe.json for `rows_per_step(context)`."""
    rows = rows_per_step(context)
    if rows * context > STEP_TOKENS and context >= LONG_CONTEXT:
        return (
            f"at least {LONG_CONTEXT_ROWS} rows a step from context {LONG_CONTEXT} "
            f"({rows * context:,} tokens): far dependencies need more sequences a step"
        )
    return f"about {STEP_TOKENS} tokens a step at context {context}"
