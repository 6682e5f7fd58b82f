"""The recipe's rule for large corpora: context and model size when the train split holds
`LARGE_CORPUS_TRAIN_TOKENS` tokens or more (clinical records, pooled corpora).

`seqlm.training.recipe.choose_recipe` asks `large_corpus_plan` first; below the
threshold it returns None and the small-data rule of `recipe.py` decides unchanged.
Everything else (dropout, batch, learning rate, evaluation) is the common rule.

Why large corpora get a rule of their own (MIMIC-IV demo, docs/training.md):

- *size*: the common rule keeps non-embedding parameters at most a tenth of the tokens
  the budget reads, so 1.5M tokens bought 3 x 64 (held-out perplexity 304, level with
  the 8-gram's 306) where this rule's 4 x 128 on 1M tokens, in the same CPU time (3.9
  vs 4.0 minutes), reached 259 (both at the context-256 windows this rule used before
  the window rule below; on the demo re-split by another seed the same pair was closer:
  229 vs 236; with 64-token rotary windows 4 x 128 on 1M tokens reaches 170). With a vocabulary of thousands of tokens and a corpus
  read only a few times, a wide model learns more per token than a long-trained narrow
  one (issues 13 and 20 point the same way: a 4 x 256 GPT and a 2 x 256 LSTM in 14
  minutes reached 152 and 102 against 3 x 96's 193), so the budget cap here is one
  token read per parameter; the data cap (2.5 x train tokens) is the common one.
- *depth*: the shapes have two blocks and grow wider first (`LARGE_SHAPE_LADDER`). At
  the same width two blocks learned more per token and per CPU second than four (MIMIC,
  64-token rotary windows: tuning loss 5.352 vs 5.465 at 300k tokens in 45 vs 66 CPU s;
  held-out perplexity 165.8 vs 169.7 at 1M tokens in 155 vs 210 CPU s), and at
  `--budget 1Mtok` this ladder's 2 x 192 beat the four-block ladder's 4 x 128 (held-out
  perplexity 262.7 vs 278.4 with text values as tokens; paired -0.058 nats [-0.066,
  -0.052]; 238 vs 217 CPU s). Larger budgets were not compared.
- *context and positions*: records longer than 512 tokens are windowed anyway (MIMIC:
  95% of train subjects run past 512 tokens), so the window is a free choice, not the
  length of a record. It is `WINDOWED_CONTEXT` = 64 tokens with rotary (relative)
  positions. A window cut from the middle of a record has no meaningful absolute
  position; with 1,024 tokens a step, 64-token windows give 16 independent windows a
  step instead of 4, and attention no longer spreads an untrained head over 256 keys.
  Measured on MIMIC at 300k tokens and the same 4 x 128 model (docs/training.md, "Why
  the GPT lagged the LSTM"): tuning loss 5.905 at context 256 with learned positions,
  5.758 with rotary, 5.583 at context 64 (learned), 5.465 at 64 with rotary; the LSTM
  baseline (2 x 128, context 256) 5.548. Sequences that fit 512 tokens keep the common
  rule's whole-sequence context and learned positions. (A rotary model has no GPT-2
  counterpart: `seqlm export` refuses it; `--set model.positions="learned"` keeps
  a model exportable at the cost measured above.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seqlm.training.recipe_basis import (
    PARAMS_PER_TRAIN_TOKEN,
    SHAPE_LADDER,
    STEP_TOKENS,
    BudgetSpec,
    CorpusFacts,
    _non_embedding_params,
    expected_tokens,
)

# The train-split size from which this rule applies. The MIMIC-IV demo's default
# clinical tokens give 849,879 train tokens; the small-data corpora the common rule was
# measured on (birdsong, music, planted) hold at most a few hundred thousand.
LARGE_CORPUS_TRAIN_TOKENS = 500_000
# ... and the vocabulary from which it applies (MIMIC: 4,164-5,123 tokens; birdsong,
# music and the planted corpora: 15-110).
LARGE_CORPUS_MIN_VOCAB = 1_000
# The window for records that are windowed anyway (see the module docstring), and the
# positions it uses: relative, since a window's first token is anywhere in its record.
WINDOWED_CONTEXT = 64
WINDOWED_POSITIONS = "rotary"
# Part-shared token embeddings (model.token_parts) when at least this share of the
# vocabulary fuses a code with a value: on the MIMIC demo (74% fused) they were better
# on held-out subjects at 1M and 5.8M tokens, on two other splits, in code order and
# with value quintiles, by 0.09-0.17 nats and 0.8-2.0 top-10 points, at the same CPU
# (docs/training.md, "Part-shared token embeddings"). Not measured on small corpora,
# which keep the plain table.
LARGE_PARTS_MIN_SHARE = 0.25
# Tokens the budget must read per non-embedding parameter (the common rule asks 10).
LARGE_BUDGET_TOKENS_PER_PARAM = 1.0
# Blocks of the large-corpus shapes: two blocks learned more per token and per CPU second
# than four at the same width (MIMIC, 300k and 1M tokens; docs/training.md "Large
# corpora"). Width grows first; deeper shapes come only past LARGE_WIDEST_SHALLOW
# (data caps above 3.5M parameters: corpora of 1.4M+ train tokens, none measured here).
LARGE_DEPTH = 2
LARGE_WIDEST_SHALLOW = 384
LARGE_SHAPE_LADDER: tuple[tuple[int, int], ...] = tuple(
    (LARGE_DEPTH, width) for width in (32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384)
) + tuple(
    shape
    for shape in SHAPE_LADDER
    if _non_embedding_params(*shape) > _non_embedding_params(LARGE_DEPTH, LARGE_WIDEST_SHALLOW)
)


@dataclass(frozen=True)
class LargePlan:
    """Context, shape and expected tokens for a large corpus, with the reasons."""

    context: int = field(metadata={"help": "window length in tokens"})
    shape: tuple[int, int] = field(metadata={"help": "(n_layer, n_embd)"})
    tokens: int = field(metadata={"help": "training tokens the budget should read"})
    positions: str = field(metadata={"help": "position encoding: learned or rotary"})
    reasons: dict[str, str] = field(metadata={"help": "why the context and the shape"})
    token_parts: bool = field(
        default=False, metadata={"help": "part-shared token embeddings (model.token_parts)"}
    )


def is_large(facts: CorpusFacts) -> bool:
    """Whether the large-corpus rule decides the context and the size: a large train
    split with a vocabulary of clinical size (its wide two-block shapes were chosen for
    thousands of tokens; a large corpus of a few dozen symbols keeps the common rule)."""
    return (
        facts.train_tokens >= LARGE_CORPUS_TRAIN_TOKENS
        and facts.vocab_size >= LARGE_CORPUS_MIN_VOCAB
    )


# The common rule's longest context: sequences that fit it are read whole.
WHOLE_SEQUENCE_MAX = 512


def _whole_sequence_context(facts: CorpusFacts) -> int:
    """95th percentile of train lengths, next power of two, from 32."""
    return int(max(32, 2 ** math.ceil(math.log2(max(facts.length_p95, 2)))))


def is_windowed(facts: CorpusFacts) -> bool:
    """Whether the records are longer than the common rule's longest window (512)."""
    return _whole_sequence_context(facts) > WHOLE_SEQUENCE_MAX


def large_context(facts: CorpusFacts) -> int:
    """When the whole-sequence context fits the common rule's 512, whole sequences are
    read as the common rule would (cutting them would hide a dependency across the cut:
    a planted corpus with 50-300-token gaps has 600k+ train tokens); records windowed
    anyway get WINDOWED_CONTEXT."""
    return WINDOWED_CONTEXT if is_windowed(facts) else _whole_sequence_context(facts)


def large_shape(
    facts: CorpusFacts, budget: BudgetSpec, context: int, device: str
) -> tuple[tuple[int, int], int, float]:
    """(shape, tokens the budget reads, data cap): the largest LARGE_SHAPE_LADDER shape
    within PARAMS_PER_TRAIN_TOKEN x train tokens and within one parameter per token the
    budget reads (a smaller model reads more of a budget in minutes or FLOPs, so the
    walk down re-estimates the tokens at each step)."""
    data_cap = PARAMS_PER_TRAIN_TOKEN * facts.train_tokens
    fitting = [s for s in LARGE_SHAPE_LADDER if _non_embedding_params(*s) <= data_cap]
    index = LARGE_SHAPE_LADDER.index(fitting[-1]) if fitting else 0
    while True:
        shape = LARGE_SHAPE_LADDER[index]
        tokens = expected_tokens(budget, shape, facts, context, device)
        if index == 0 or tokens >= LARGE_BUDGET_TOKENS_PER_PARAM * _non_embedding_params(*shape):
            return shape, tokens, data_cap
        index -= 1


def large_corpus_plan(facts: CorpusFacts, budget: BudgetSpec, device: str) -> LargePlan | None:
    """The large-corpus choices, or None when the train split is below the threshold."""
    if not is_large(facts):
        return None
    context = large_context(facts)
    windowed = is_windowed(facts)
    shape, tokens, data_cap = large_shape(facts, budget, context, device)
    params = _non_embedding_params(*shape)
    reasons = {
        "block_size": (
            f"95% of train sequences are at most {facts.length_p95} tokens "
            f"(longest {facts.length_max}); "
            + (
                f"records pass {WHOLE_SEQUENCE_MAX} tokens and are windowed anyway "
                f"(corpus of {LARGE_CORPUS_TRAIN_TOKENS:,}+ train tokens): windows of "
                f"{WINDOWED_CONTEXT} with {WINDOWED_POSITIONS} positions, "
                f"{STEP_TOKENS // WINDOWED_CONTEXT} windows a step "
                "(learns faster per token and per CPU second than 256, docs/training.md)"
                if windowed
                else f"the next power of two: sequences up to {WHOLE_SEQUENCE_MAX} tokens "
                "are read whole"
            )
        ),
        "n_layer/n_embd": f"{params:,} non-embedding parameters: at most "
        f"{PARAMS_PER_TRAIN_TOKEN:g} x {facts.train_tokens:,} train tokens "
        f"({int(data_cap):,}) and at most the {tokens:,} tokens the budget reads "
        f"({LARGE_BUDGET_TOKENS_PER_PARAM:g} per parameter: large-corpus rule, a wide "
        f"model learns more per token of a large vocabulary; {LARGE_DEPTH} blocks, wider "
        f"before deeper up to width {LARGE_WIDEST_SHALLOW}: two blocks learned more per "
        "token and per CPU second than four, docs/training.md)",
    }
    reasons["positions"] = (
        f"{WINDOWED_POSITIONS}: a window starts anywhere in its record, so only relative "
        "positions mean something"
        if windowed
        else "learned: whole sequences, read from their start"
    )
    positions = WINDOWED_POSITIONS if windowed else "learned"
    parts = facts.fused_tokens >= LARGE_PARTS_MIN_SHARE * facts.vocab_size
    share = facts.fused_tokens / max(facts.vocab_size, 1)
    reasons["token_parts"] = f"{share:.0%} of the vocabulary fuses a code with a value " + (
        f"(at least {LARGE_PARTS_MIN_SHARE:.0%}): each such token also reads a row "
        "shared by its code and one shared by its value, better at the same CPU on "
        "held-out MIMIC subjects (docs/training.md)"
        if parts
        else f"(under {LARGE_PARTS_MIN_SHARE:.0%}): one row per token"
    )
    return LargePlan(
        context=context,
        shape=shape,
        tokens=tokens,
        positions=positions,
        reasons=reasons,
        token_parts=parts,
    )
