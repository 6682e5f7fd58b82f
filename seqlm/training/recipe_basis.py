"""What the training recipe reasons with: budgets, corpus figures, the ladder of model
shapes and the tokens a budget reads. Shared by the common rule (`recipe.py`) and the
large-corpus rule (`recipe_large.py`), so neither imports the other's internals."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqlm.errors import ConfigError
from seqlm.model.token_parts import token_part_map

# Sustained training FLOP/s assumed when the budget is in minutes and nothing was
# measured (a first guess of the shape to time, and `choose_recipe` without a corpus).
# `seqlm train` replaces it with the speed it measures (recipe_minutes,
# BudgetSpec.flops_per_s): on a loaded 2-core machine the real rate was a seventh of this.
ASSUMED_FLOPS_PER_S = {"cpu": 1.2e10, "cuda": 1.0e14}
# (n_layer, n_embd) from small to large: non-embedding parameters 12 L d^2.
SHAPE_LADDER: tuple[tuple[int, int], ...] = (
    (1, 16),
    (1, 32),
    (2, 32),
    (2, 48),
    (2, 64),
    (3, 64),
    (3, 80),
    (3, 96),
    (4, 96),
    (4, 128),
    (4, 160),
    (4, 192),
    (6, 192),
    (6, 256),
    (8, 256),
    (8, 384),
    (12, 512),
)
HEAD_DIM = 32
PARAMS_PER_TRAIN_TOKEN = 2.5
BUDGET_TOKENS_PER_PARAM = 10.0
STEP_TOKENS = 1024
TARGET_EVALUATIONS = 30
PATIENCE = 10
DEFAULT_BUDGET = "10m"
FINE_TUNE_LR_DIVISOR = 3.0

_BUDGET = re.compile(
    r"^\s*(?P<number>[0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE
)
_TIME_UNITS = {"s": 1 / 60, "sec": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0}
_TOKEN_UNITS = {"tok": 1, "tokens": 1, "ktok": 10**3, "mtok": 10**6, "gtok": 10**9}
_FLOP_UNITS = {"flop": 1, "flops": 1}


@dataclass(frozen=True)
class BudgetSpec:
    """A `--budget` value: exactly one of minutes, tokens or FLOPs."""

    minutes: float | None = field(default=None, metadata={"help": "wall-clock minutes"})
    tokens: int | None = field(default=None, metadata={"help": "training tokens to read"})
    flops: float | None = field(default=None, metadata={"help": "training FLOPs to spend"})
    flops_per_s: float | None = field(
        default=None,
        metadata={
            "help": "measured training FLOP/s for a budget in minutes "
            "(seqlm.training.throughput); None: the assumed ASSUMED_FLOPS_PER_S"
        },
    )

    def describe(self) -> str:
        if self.minutes is not None:
            return f"{self.minutes:g} minutes"
        if self.tokens is not None:
            return f"{self.tokens:,} tokens"
        return f"{self.flops:.3g} FLOPs"


def parse_budget(text: str) -> BudgetSpec:
    """`10m`, `90s`, `1.5h` (time), `2Mtok`, `500000tokens` (tokens), `1e15flops`."""
    match = _BUDGET.match(str(text))
    unit = match.group("unit").lower() if match else ""
    if match is None or not (unit in _TIME_UNITS or unit in _TOKEN_UNITS or unit in _FLOP_UNITS):
        raise ConfigError(
            f"--budget {text!r} not understood; use minutes (10m, 90s, 1h), tokens "
            "(2Mtok, 500000tokens) or FLOPs (1e15flops)"
        )
    number = float(match.group("number"))
    if number <= 0:
        raise ConfigError(f"--budget must be positive, got {text!r}")
    if unit in _TIME_UNITS:
        return BudgetSpec(minutes=number * _TIME_UNITS[unit])
    if unit in _TOKEN_UNITS:
        return BudgetSpec(tokens=int(number * _TOKEN_UNITS[unit]))
    return BudgetSpec(flops=number)


@dataclass(frozen=True)
class CorpusFacts:
    """What the recipe reads from a corpus."""

    train_tokens: int = field(metadata={"help": "tokens in the train split"})
    train_sequences: int = field(metadata={"help": "sequences in the train split"})
    tuning_tokens: int = field(metadata={"help": "tokens in the tuning split"})
    vocab_size: int = field(metadata={"help": "vocabulary size"})
    length_p50: int = field(metadata={"help": "median train sequence length"})
    length_p95: int = field(metadata={"help": "95th percentile train sequence length"})
    length_max: int = field(metadata={"help": "longest train sequence"})
    fused_tokens: int = field(
        default=0,
        metadata={"help": "vocabulary tokens that fuse a code with a value (bin or text)"},
    )

    @classmethod
    def of(cls, corpus: Any, train_split: str = "train", tuning_split: str = "tuning"):
        lengths = corpus.split(train_split)["length"].to_numpy().astype(np.int64)
        if lengths.size == 0:
            raise ConfigError(f"{corpus.path}: the {train_split} split is empty")
        tuning = corpus.split(tuning_split)["length"].to_numpy().astype(np.int64)
        return cls(
            train_tokens=int(lengths.sum()),
            train_sequences=int(lengths.size),
            tuning_tokens=int(tuning.sum()),
            vocab_size=int(corpus.vocab_size),
            length_p50=int(np.percentile(lengths, 50)),
            length_p95=int(np.percentile(lengths, 95)),
            length_max=int(lengths.max()),
            fused_tokens=fused_token_count(corpus),
        )


def fused_token_count(corpus: Any) -> int:
    """Tokens of the corpus's vocabulary that fuse a code with its value: the tokens
    `model.token_parts` gives a code row and a value row (0 for a vocabulary without)."""
    vocabulary = getattr(corpus, "vocabulary", None)
    if vocabulary is None or not getattr(vocabulary, "data_tokens", None):
        return 0
    return int((token_part_map(vocabulary).code_ids != 0).sum())


def heads_for(width: int) -> int:
    """About one head per 32 channels, at least two, dividing the width."""
    heads = max(2, width // HEAD_DIM)
    while width % heads:
        heads -= 1
    return heads


def _non_embedding_params(n_layer: int, n_embd: int) -> int:
    return 12 * n_layer * n_embd * n_embd


def _flops_per_token(n_layer: int, n_embd: int, vocab: int, context: int) -> float:
    params = _non_embedding_params(n_layer, n_embd) + vocab * n_embd
    return 6.0 * params + 12.0 * n_layer * n_embd * context


def _shape(target_params: float) -> tuple[int, int]:
    """The largest ladder shape within the target (the smallest if none is)."""
    fitting = [s for s in SHAPE_LADDER if _non_embedding_params(*s) <= target_params]
    return fitting[-1] if fitting else SHAPE_LADDER[0]


def largest_trainable_shape(
    facts: CorpusFacts,
    budget: BudgetSpec,
    context: int,
    device: str,
    tokens_per_param: float,
) -> tuple[tuple[int, int], int, float]:
    """(shape, tokens the budget reads, data cap): the ladder's largest shape within
    PARAMS_PER_TRAIN_TOKEN x train tokens, walked down until the budget reads at least
    `tokens_per_param` tokens a non-embedding parameter (a smaller model reads more of a
    budget in time or FLOPs)."""
    data_cap = PARAMS_PER_TRAIN_TOKEN * facts.train_tokens
    shape = _shape(data_cap)
    while True:
        tokens = expected_tokens(budget, shape, facts, context, device)
        if tokens >= tokens_per_param * _non_embedding_params(*shape):
            break
        smaller = SHAPE_LADDER.index(shape) - 1
        if smaller < 0:
            break
        shape = SHAPE_LADDER[smaller]
    return shape, tokens, data_cap


def expected_tokens(
    budget: BudgetSpec, shape: tuple[int, int], facts: CorpusFacts, context: int, device: str
) -> int:
    """Tokens `budget` reads with `shape` (tokens given, or FLOPs or minutes turned into
    tokens at the shape's FLOPs a token and the measured or assumed FLOP/s)."""
    if budget.tokens is not None:
        return budget.tokens
    per_token = _flops_per_token(*shape, facts.vocab_size, context)
    if budget.flops is not None:
        return int(budget.flops / per_token)
    rate = budget.flops_per_s or ASSUMED_FLOPS_PER_S["cuda" if device.startswith("cuda") else "cpu"]
    return int(60.0 * budget.minutes * rate / per_token)
