"""The recipe's rule for large corpora: context and model size when the train split holds
`LARGE_CORPUS_TRAIN_TOKENS` tokens or more (clinical records, pooled corpora).

`seqlm.training.recipe.choose_recipe` asks `large_corpus_plan` first; below the
threshold it returns None and the small-data rule of `recipe.py` decides unchanged.
Everything else (dropout, batch, learning rate, evaluation) is the common rule.

Why large corpora get a rule of their own (MIMIC-IV demo, docs/training.md):

- *size*: the common rule keeps non-embedding parameters at most a tenth of the tokens
  the budget reads, so 1.5M tokens bought 3 x 64 (held-out perplexity 304, level with
  the 8-gram's 306) where this rule's 4 x 128 on 1M tokens, in the same CPU time (3.9
  vs 4.0 minutes), reached 259 (on the demo re-split by another seed the same pair was
  closer: 229 vs 236). With a vocabulary of thousands of tokens and a corpus
  read only a few times, a wide model learns more per token than a long-trained narrow
  one (issues 13 and 20 point the same way: a 4 x 256 GPT and a 2 x 256 LSTM in 14
  minutes reached 152 and 102 against 3 x 96's 193), so the budget cap here is one
  token read per parameter; the data cap (2.5 x train tokens) is the common one.
- *context*: records longer than 512 tokens are windowed anyway (MIMIC: 95% of train
  subjects run past 512 tokens), and attention costs 12 L d T FLOPs a token: at T = 512
  and width 96 as much as every weight matrix together. The cap is 256 tokens, which
  leaves the compute to width (the cap on its own was not measured). Sequences that fit
  512 tokens keep the common rule's whole-sequence context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seqlm.training.recipe_basis import (
    PARAMS_PER_TRAIN_TOKEN,
    BudgetSpec,
    CorpusFacts,
    _non_embedding_params,
    largest_trainable_shape,
)

# The train-split size from which this rule applies. The MIMIC-IV demo's default
# clinical tokens give 849,879 train tokens; the small-data corpora the common rule was
# measured on (birdsong, music, planted) hold at most a few hundred thousand.
LARGE_CORPUS_TRAIN_TOKENS = 500_000
# Longest window for a large corpus (see the module docstring).
LARGE_CONTEXT_CAP = 256
# Tokens the budget must read per non-embedding parameter (the common rule asks 10).
LARGE_BUDGET_TOKENS_PER_PARAM = 1.0


@dataclass(frozen=True)
class LargePlan:
    """Context, shape and expected tokens for a large corpus, with the reasons."""

    context: int = field(metadata={"help": "window length in tokens"})
    shape: tuple[int, int] = field(metadata={"help": "(n_layer, n_embd)"})
    tokens: int = field(metadata={"help": "training tokens the budget should read"})
    reasons: dict[str, str] = field(metadata={"help": "why the context and the shape"})


def is_large(facts: CorpusFacts) -> bool:
    """Whether the large-corpus rule decides the context and the size."""
    return facts.train_tokens >= LARGE_CORPUS_TRAIN_TOKENS


# The common rule's longest context: sequences that fit it are read whole.
WHOLE_SEQUENCE_MAX = 512


def large_context(facts: CorpusFacts) -> int:
    """95th percentile of train lengths, next power of two, from 32. When that fits the
    common rule's 512, whole sequences are read as the common rule would (cutting them
    would hide a dependency across the cut: a planted corpus with 50-300-token gaps has
    600k+ train tokens); only records windowed anyway are capped at LARGE_CONTEXT_CAP."""
    whole = max(32, 2 ** math.ceil(math.log2(max(facts.length_p95, 2))))
    return int(whole if whole <= WHOLE_SEQUENCE_MAX else LARGE_CONTEXT_CAP)


def large_corpus_plan(facts: CorpusFacts, budget: BudgetSpec, device: str) -> LargePlan | None:
    """The large-corpus choices, or None when the train split is below the threshold."""
    if not is_large(facts):
        return None
    context = large_context(facts)
    shape, tokens, data_cap = largest_trainable_shape(
        facts, budget, context, device, LARGE_BUDGET_TOKENS_PER_PARAM
    )
    params = _non_embedding_params(*shape)
    reasons = {
        "block_size": (
            f"95% of train sequences are at most {facts.length_p95} tokens "
            f"(longest {facts.length_max}); "
            + (
                f"power of two within 32..{LARGE_CONTEXT_CAP} for a corpus of "
                f"{LARGE_CORPUS_TRAIN_TOKENS:,}+ train tokens whose records pass "
                f"{WHOLE_SEQUENCE_MAX} tokens (they are windowed anyway; attention's cost "
                "per token grows with the window, width pays more)"
                if context == LARGE_CONTEXT_CAP and facts.length_p95 > WHOLE_SEQUENCE_MAX
                else f"the next power of two: sequences up to {WHOLE_SEQUENCE_MAX} tokens "
                "are read whole"
            )
        ),
        "n_layer/n_embd": f"{params:,} non-embedding parameters: at most "
        f"{PARAMS_PER_TRAIN_TOKEN:g} x {facts.train_tokens:,} train tokens "
        f"({int(data_cap):,}) and at most the {tokens:,} tokens the budget reads "
        f"({LARGE_BUDGET_TOKENS_PER_PARAM:g} per parameter: large-corpus rule, a wide "
        "model learns more per token of a large vocabulary)",
    }
    return LargePlan(context=context, shape=shape, tokens=tokens, reasons=reasons)
