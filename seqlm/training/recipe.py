"""The training recipe: model shape and training settings chosen from the corpus and a budget.

`seqlm train CORPUS` without a preset or model shape calls `choose_recipe`: it reads the
train split's size, the vocabulary and the sequence lengths, and the budget (minutes,
tokens or FLOPs), and returns the GPT shape and `TrainConfig` values with one reason per
choice. Explicit settings (`--preset`, `--set model.X=`, `--set train.X=`, a config
file) always win; `apply_recipe` fills in only what the user left unset and the run
writes `recipe.json` saying what was chosen, why, and what the user set.

A budget in minutes is turned into tokens at the speed measured on this machine
(`recipe_minutes`, `throughput`: the planned shape timed with the real trainer before
the plan is fixed; recorded under `throughput` in recipe.json; a resume measures nothing),
and never to more than MAX_MINUTE_BUDGET_EPOCHS passes over the train split.

The rule (measured in docs/training.md, sweep in benchmarks/bench_recipe.py):

- *context*: the 95th percentile of the train sequence lengths, rounded up to a power of
  two, within 32..512 (longer sequences are windowed; a CPU pays quadratically for more);
- *size*: non-embedding parameters about twice the training tokens and at most a tenth
  of the tokens the budget will read, so a 6k-token corpus gets a ~20k-parameter model and
  a 1.5M-token one ~1-3M; width and depth from a fixed ladder of shapes (heads of 32);
- *regularisation*: dropout from how many epochs the budget reads (none under 10 epochs,
  0.1 from 10, 0.2 from 50), weight decay 0.1;
- *batch*: about 1,024 tokens a step, at least 8 rows from context 512 (recipe_context;
  far dependencies need more sequences a step; small steps learn faster per token on a
  compute-bound CPU), learning rate 3e-3 at width 128 and below, falling as 1/sqrt(width);
- *positions*: rotary (relative), measured better on small corpora than learned ones and
  than ALiBi; the large-corpus rule keeps learned ones for whole sequences;
- *embeddings*: the large-corpus rule gives fused code + value tokens part-shared rows
  (`model.token_parts`) when a quarter of the vocabulary is such tokens;
- *evaluation*: about 30 evaluations over the budget, each on up to a quarter of the
  tokens trained between two of them; early stopping after 10 evaluations (a third of
  the budget) without improvement, and scoring uses best/ (the lowest tuning loss), so
  an overfitting run is restored to its best point.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from seqlm.errors import ConfigError
from seqlm.training.config import RunSettings, TrainConfig
from seqlm.training.recipe_basis import (
    BUDGET_TOKENS_PER_PARAM,
    DEFAULT_BUDGET,
    FINE_TUNE_LR_DIVISOR,
    PARAMS_PER_TRAIN_TOKEN,
    PATIENCE,
    STEP_TOKENS,
    TARGET_EVALUATIONS,
    BudgetSpec,
    CorpusFacts,
    _non_embedding_params,
    expected_tokens,
    heads_for,
    largest_trainable_shape,
    parse_budget,
)
from seqlm.training.recipe_context import rows_per_step, rows_reason
from seqlm.training.recipe_large import LargePlan, large_corpus_plan
from seqlm.training.recipe_minutes import evaluation_interval, measured_plan, tokens_in_minutes
from seqlm.training.throughput import Throughput, measure_throughput

# Small corpora (below the large-corpus rule) get rotary positions: measured in
# docs/training.md ("Positions"), better on the finch pool and level with the true model
# on a local-only planted corpus, where learned positions were significantly worse.
# ALiBi (model.positions="alibi") was measured against rotary at the same plans on small
# birdsong corpora and was worse on each (docs/training.md, "ALiBi on small corpora").
SMALL_DATA_POSITIONS = "rotary"
# A budget in minutes never plans more epochs than this: on a tiny corpus ten minutes read
# it hundreds of times, the learning rate was still high when early stopping ended the
# run, and the best point was caught between coarse evaluations (unseen canary song,
# 12.6k train tokens: 1,154 epochs planned, GPT worse than the LSTM by 0.031 nats; the
# plan capped at 100 epochs: level with it; docs/training.md "Budgets in minutes").
MAX_MINUTE_BUDGET_EPOCHS = 100


@dataclass
class Recipe:
    """Chosen model and train settings, with one reason per choice."""

    model: dict[str, Any] = field(metadata={"help": "GPTConfig fields chosen"})
    train: dict[str, Any] = field(metadata={"help": "TrainConfig fields chosen"})
    reasons: dict[str, str] = field(metadata={"help": "why each value was chosen"})
    facts: CorpusFacts = field(metadata={"help": "the corpus figures the rule read"})
    budget: BudgetSpec = field(metadata={"help": "the budget the rule planned for"})
    expected_tokens: int = field(metadata={"help": "training tokens the budget should read"})
    throughput: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "the speed measured for a budget in minutes (None: not measured)"},
    )

    def to_dict(self) -> dict[str, Any]:
        record = {
            "rule": "seqlm.training.recipe (docs/training.md)",
            "budget": self.budget.describe(),
            "expected_tokens": self.expected_tokens,
            "corpus": dict(self.facts.__dict__),
            "model": dict(self.model),
            "train": dict(self.train),
            "reasons": dict(self.reasons),
        }
        if self.throughput is not None:
            record["throughput"] = self.throughput
        return record


def _context(facts: CorpusFacts) -> int:
    wanted = max(facts.length_p95, 2)
    return int(min(512, max(32, 2 ** math.ceil(math.log2(wanted)))))


def _size(facts: CorpusFacts, budget: BudgetSpec, context: int, device: str):
    """Shape and expected tokens: the data cap, lowered until the budget can train it."""
    return largest_trainable_shape(facts, budget, context, device, BUDGET_TOKENS_PER_PARAM)


@dataclass(frozen=True)
class _Plan:
    """Context, shape and the tokens the budget reads: what the rest is derived from."""

    context: int = field(metadata={"help": "context (block_size) chosen"})
    shape: tuple[int, int] = field(metadata={"help": "(n_layer, n_embd) chosen"})
    tokens: int = field(metadata={"help": "training tokens the budget reads"})
    data_cap: float = field(metadata={"help": "non-embedding parameters the data allow"})
    large: LargePlan | None = field(metadata={"help": "the large-corpus plan, if it applies"})


@dataclass(frozen=True)
class UserShape:
    """The sizes the user set (`--set model.block_size=`, `n_layer`, `n_embd`): the plan
    derives the batch, learning rate and evaluation from them, not from its own."""

    context: int | None = field(default=None, metadata={"help": "block_size set"})
    n_layer: int | None = field(default=None, metadata={"help": "n_layer set"})
    n_embd: int | None = field(default=None, metadata={"help": "n_embd set"})

    @classmethod
    def of(cls, model: dict[str, Any]) -> UserShape:
        def size(key: str) -> int | None:
            # A value that is not a whole number is left to the model's own check,
            # which names the setting (--set model.layers=zero).
            value = model.get(key)
            if isinstance(value, bool) or not isinstance(value, int | str):
                return None
            try:
                return int(value)
            except ValueError:
                return None

        return cls(size("block_size"), size("n_layer"), size("n_embd"))


def _plan(
    facts: CorpusFacts,
    budget: BudgetSpec,
    device: str,
    shape: tuple[int, int] | None = None,
    user: UserShape = UserShape(),
) -> _Plan:
    """The plan for a budget; `shape` fixes the shape (a measured one) instead of the
    ladder's choice, and the user's sizes win over both."""
    large = large_corpus_plan(facts, budget, device)  # None below its threshold
    if large is None:
        context = _context(facts)
        chosen, tokens, data_cap = _size(facts, budget, context, device)
    else:
        context, chosen, tokens = large.context, large.shape, large.tokens
        data_cap = PARAMS_PER_TRAIN_TOKEN * facts.train_tokens
    wanted = shape if shape is not None else chosen
    wanted = (user.n_layer or wanted[0], user.n_embd or wanted[1])
    if wanted != chosen or (user.context or context) != context:
        context = user.context or context
        chosen, tokens = wanted, expected_tokens(budget, wanted, facts, context, device)
    return _Plan(context, chosen, tokens, data_cap, large)


def _dropout(epochs: float) -> float:
    # Early stopping with best/ already guards against a few epochs too many; dropout
    # pays only when the budget reads the data many times (finch: 37 epochs without
    # dropout overfit, 20 with 0.1 did not), and it slows a small model that is still
    # underfitting (planted corpora at 7 epochs, docs/training.md).
    if epochs < 10.0:
        return 0.0
    if epochs < 50.0:
        return 0.1
    return 0.2


def _eval_batches(facts: CorpusFacts, context: int, rows: int, eval_every: int) -> int:
    """The tuning split, or a quarter of the tokens trained between two evaluations."""
    tuning_rows = max(1, math.ceil(facts.tuning_tokens / context))
    quarter = max(1, math.ceil(0.25 * eval_every))  # eval batches, each as big as a step's
    return max(1, min(math.ceil(tuning_rows / rows), quarter))


def _model_table(facts: CorpusFacts, plan: _Plan) -> dict[str, Any]:
    n_layer, n_embd = plan.shape
    table = {
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": heads_for(n_embd),
        "block_size": plan.context,
        "dropout": _dropout(plan.tokens / max(facts.train_tokens, 1)),
        "positions": plan.large.positions if plan.large is not None else SMALL_DATA_POSITIONS,
    }
    if plan.large is not None:  # part-shared embeddings: measured on large corpora only
        table["token_parts"] = plan.large.token_parts
    return table


def _train_table(facts: CorpusFacts, plan: _Plan, tokens: int) -> dict[str, Any]:
    batch = rows_per_step(plan.context)  # STEP_TOKENS a step, more rows at long contexts
    steps = max(1, tokens // (batch * plan.context))
    eval_every = evaluation_interval(steps)
    lr = 3e-3 * min(1.0, math.sqrt(128 / plan.shape[1]))
    return {
        "batch_size": batch,
        "lr": round(lr, 6),
        "weight_decay": 0.1,
        "warmup_steps": min(100, max(10, steps // 50)),
        "eval_every": eval_every,
        "eval_batches": _eval_batches(facts, plan.context, batch, eval_every),
        "checkpoint_every": eval_every,
        "early_stopping": PATIENCE,
        "log_every": max(1, min(50, eval_every // 2)),
    }


def _reasons(facts: CorpusFacts, plan: _Plan, tokens: int, train: dict[str, Any]) -> dict:
    n_layer, n_embd = plan.shape
    params = _non_embedding_params(n_layer, n_embd)
    epochs = tokens / max(facts.train_tokens, 1)
    steps = max(1, tokens // (train["batch_size"] * plan.context))
    reasons = {
        "block_size": f"95% of train sequences are at most {facts.length_p95} tokens "
        f"(longest {facts.length_max}); power of two within 32..512",
        "n_layer/n_embd": f"{params:,} non-embedding parameters: at most "
        f"{PARAMS_PER_TRAIN_TOKEN:g} x {facts.train_tokens:,} train tokens "
        f"({int(plan.data_cap):,}) and at most 1/{BUDGET_TOKENS_PER_PARAM:g} of the "
        f"{tokens:,} tokens the budget reads",
        "dropout": f"the budget reads about {epochs:.1f} epochs of the train split",
        "batch_size": rows_reason(plan.context),
        "lr": "3e-3 up to width 128, times sqrt(128 / width) above",
        "eval_every": f"about {TARGET_EVALUATIONS} evaluations over ~{steps:,} steps",
        "eval_batches": "the tuning split, or a quarter of the tokens trained between "
        "evaluations if that is less",
        "early_stopping": f"stop after {PATIENCE} evaluations without a lower tuning loss; "
        "scoring reads best/ (the lowest tuning loss)",
        "positions": "rotary: relative positions generalise better on small corpora (finch "
        "quickstart 1.331 against 1.350 with learned ones; a local-only planted corpus level "
        "with the n-gram; ALiBi's recency bias was worse on every small birdsong corpus "
        "measured, docs/training.md)",
    }
    if plan.large is not None:
        reasons.update(plan.large.reasons)
    return reasons


Measure = Callable[[dict[str, Any], int], Throughput]


def choose_recipe(
    facts: CorpusFacts,
    budget: BudgetSpec | None = None,
    device: str = "cpu",
    measure: Measure | None = None,
    user: UserShape = UserShape(),
) -> Recipe:
    """The recipe for a corpus and budget (see the module docstring for the rule).

    `measure(model_table, rows)` times a candidate on this machine; with it a budget in
    minutes is planned from measured speed (recipe_minutes), without it from
    ASSUMED_FLOPS_PER_S. `user`: the sizes the user set, which the rest follows."""
    budget = budget or parse_budget(DEFAULT_BUDGET)
    plan = _plan(facts, budget, device, user=user)
    tokens, measured = plan.tokens, None
    if budget.minutes is not None and measure is not None:
        found = measured_plan(
            budget,
            lambda spec, shape: _plan(facts, spec, device, shape, user),
            lambda candidate: candidate.shape,
            lambda candidate: measure(
                _model_table(facts, candidate), rows_per_step(candidate.context)
            ),
        )
        plan = found.plan
        tokens, arithmetic = tokens_in_minutes(
            found.timing,
            budget.minutes,
            lambda every: _eval_batches(facts, plan.context, rows_per_step(plan.context), every),
        )
        plan = replace(plan, tokens=tokens)
        measured = {
            "timed": [t.to_dict() for t in found.timings],
            "chosen": found.timing.to_dict(),
            "plan": arithmetic,
        }
    epoch_cap = MAX_MINUTE_BUDGET_EPOCHS * max(facts.train_tokens, 1)
    capped = budget.minutes is not None and tokens > epoch_cap
    if capped:  # the shape is unchanged: its data cap (2.5 N) is below a tenth of 100 N
        tokens = epoch_cap
        plan = replace(plan, tokens=tokens)
    model = _model_table(facts, plan)
    train = _train_table(facts, plan, tokens)
    reasons = _reasons(facts, plan, tokens, train) | _user_reasons(user)
    if budget.minutes is not None:
        train["max_minutes"] = budget.minutes
        if measured is not None:
            train["max_tokens"] = tokens
            reasons["max_tokens"] = _minutes_reason(budget.minutes, measured)
        if capped:
            train["max_tokens"] = tokens
            reasons["max_tokens"] = (
                f"{MAX_MINUTE_BUDGET_EPOCHS} epochs of the {facts.train_tokens:,} train tokens, "
                f"less than the {budget.minutes:g} minutes would read"
                + (f" ({reasons['max_tokens']})" if "max_tokens" in reasons else "")
                + ": more passes over a small corpus only overfit, and the learning rate "
                "decays within the epochs that help"
            )
    else:
        train["max_tokens"] = tokens
    return Recipe(model, train, reasons, facts, budget, tokens, measured)


def _user_reasons(user: UserShape) -> dict[str, str]:
    reasons = {}
    if user.context is not None:
        reasons["block_size"] = (
            f"set by the user ({user.context}); the rows a step, the evaluation "
            "batches and the tokens follow it"
        )
    if user.n_layer is not None or user.n_embd is not None:
        reasons["n_layer/n_embd"] = (
            "set by the user (the ladder's choice kept for the size not set); the "
            "learning rate, heads and tokens follow it"
        )
    return reasons


def _minutes_reason(minutes: float, measured: dict[str, Any]) -> str:
    chosen, plan = measured["chosen"], measured["plan"]
    return (
        f"{minutes:g} minutes at the measured {chosen['tokens_per_s']:,.0f} tokens/s "
        f"({chosen['flops_per_s']:.3g} FLOP/s, {chosen['timed_steps']} steps timed), less "
        f"{100 * plan['evaluation_share']:.1f}% for evaluations and checkpoints; training "
        "still stops at the minute limit if the machine slows down"
    )


def budget_train_settings(budget: BudgetSpec, recipe: Recipe | None = None) -> dict[str, Any]:
    """The TrainConfig limits for a budget given together with an explicit shape."""
    if budget.minutes is not None:
        return {"max_minutes": budget.minutes}
    if budget.tokens is not None:
        return {"max_tokens": budget.tokens}
    if recipe is None:
        raise ConfigError("a budget in FLOPs needs the recipe to turn it into tokens")
    return {"max_tokens": recipe.expected_tokens}


_LIMITS = ("max_steps", "max_tokens", "max_minutes")


def _budget_from_settings(settings: RunSettings) -> BudgetSpec:
    """The budget to plan for: --budget, else the limits the user set, else the default."""
    if settings.budget is not None:
        return parse_budget(settings.budget)
    train, explicit = settings.train, settings.train_explicit
    if "max_minutes" in explicit and train.max_minutes is not None:
        return BudgetSpec(minutes=float(train.max_minutes))
    if "max_tokens" in explicit and train.max_tokens is not None:
        return BudgetSpec(tokens=int(train.max_tokens))
    if "max_steps" in explicit and train.max_steps is not None:
        return BudgetSpec(tokens=int(train.max_steps) * STEP_TOKENS)
    return parse_budget(DEFAULT_BUDGET)


def _measure_on(corpus: Any, settings: RunSettings) -> Measure:
    """Times a candidate as the run will train it: the user's model and train settings
    win over the candidate's, as they will in the run."""

    def measure(model: dict[str, Any], rows: int) -> Throughput:
        train = settings.train.to_dict()
        if "batch_size" not in settings.train_explicit:
            train["batch_size"] = rows
        table = {**model, **settings.model}
        if "n_embd" in settings.model and "n_head" not in settings.model:
            table["n_head"] = heads_for(int(settings.model["n_embd"]))
        return measure_throughput(
            corpus, table, TrainConfig.from_dict(train), settings.train.cpu_threads
        )

    return measure


def apply_recipe(
    settings: RunSettings, corpus: Any, device: str = "cpu", *, fine_tune: bool = False
) -> tuple[RunSettings, dict[str, Any] | None]:
    """Settings with the recipe's values filled in where the user set none, and the
    record for recipe.json (None when no recipe applies: a preset given, no budget).

    `fine_tune` (the run starts from another run's weights): the learning rate is a
    third of the recipe's, so the pooled model is adjusted rather than overwritten, and
    the dropout is left to the init run's (`--set model.dropout=` still wins)."""
    if not settings.use_recipe and settings.budget is None:
        return settings, None
    explicit = set(settings.train_explicit)
    facts = CorpusFacts.of(corpus, settings.train.train_split, settings.train.eval_split)
    budget = _budget_from_settings(settings)
    measure = None
    # Under torchrun every process resolves its own settings: timings would differ
    # between them and so would the plans, so several processes keep the assumed speed.
    one_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if settings.use_recipe and budget.minutes is not None and not fine_tune and one_process:
        measure = _measure_on(corpus, settings)
    recipe = choose_recipe(facts, budget, device, measure, UserShape.of(settings.model))
    model = dict(settings.model)
    if settings.use_recipe:
        for key, value in recipe.model.items():
            if not (fine_tune and key == "dropout"):
                model.setdefault(key, value)
        if "n_embd" in settings.model and "n_head" not in settings.model:
            width = int(settings.model["n_embd"])
            model["n_head"] = heads_for(width)
        if fine_tune:
            recipe.train["lr"] = round(recipe.train["lr"] / FINE_TUNE_LR_DIVISOR, 6)
            recipe.reasons["lr"] += f"; divided by {FINE_TUNE_LR_DIVISOR:g} to fine-tune (--init)"
            # The pool's dropout stays (the --init run's shape table): switching it off for
            # a group read under 10 epochs hurt (finch birds 2, 6, 7, docs/training.md).
            recipe.reasons["dropout"] = "fine-tuning (--init) keeps the --init run's dropout"
        chosen = dict(recipe.train)
    else:  # a preset with --budget: only the budget's limits
        chosen = budget_train_settings(recipe.budget, recipe)
    train = settings.train.to_dict()
    user_limits = explicit.intersection(_LIMITS)
    for key, value in chosen.items():
        if key in explicit or (key in _LIMITS and user_limits and settings.budget is None):
            continue
        train[key] = value
    if not user_limits:
        # the budget replaces the default step limit rather than adding to it
        for key in _LIMITS:
            if key not in chosen:
                train[key] = None
    resolved = RunSettings(
        preset=settings.preset,
        model=model,
        train=TrainConfig.from_dict(train),
        train_explicit=settings.train_explicit,
        use_recipe=settings.use_recipe,
        budget=settings.budget,
    )
    record = recipe.to_dict()
    record["applied"] = settings.use_recipe
    record["user_set"] = {
        "model": sorted(settings.model),
        "train": sorted(explicit),
    }
    return resolved, record
