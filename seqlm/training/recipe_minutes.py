"""A budget in minutes turned into tokens from measured speed (docs/training.md,
"Budgets in minutes").

The recipe first plans with the assumed device speed, times the planned shape with the
real trainer (`seqlm.training.throughput`), plans again with the measured FLOP/s, and
times the new shape if it changed (a few times at most). The tokens are then what the
timed shape reads in the budget's seconds, less the time its evaluations and
checkpoints take. The run trains to those tokens (so the decay, the evaluation interval
and the shape fit what it will read) and still stops at the wall-clock limit if the
machine slows down further. A resumed run reads its plan from config.json and measures
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from seqlm.training.recipe_basis import TARGET_EVALUATIONS, BudgetSpec
from seqlm.training.throughput import Throughput

# Shapes timed at most before the plan is taken as it stands (each costs a few seconds).
MAX_TIMED_SHAPES = 3
# Checkpoints written per evaluation: the latest one, and best/ when the tuning loss fell
# (early in training nearly every evaluation does).
CHECKPOINTS_PER_EVALUATION = 2

Plan = TypeVar("Plan")


@dataclass
class MeasuredPlan(Generic[Plan]):
    """The plan made with measured speed, and every timing taken on the way."""

    plan: Plan = field(metadata={"help": "the plan at the chosen shape's measured speed"})
    timing: Throughput = field(metadata={"help": "the chosen shape's timing"})
    timings: list[Throughput] = field(metadata={"help": "every shape timed, in order"})


def measured_plan(
    budget: BudgetSpec,
    plan_for: Callable[[BudgetSpec, tuple[int, int] | None], Plan],
    shape_of: Callable[[Plan], tuple[int, int]],
    measure: Callable[[Plan], Throughput],
) -> MeasuredPlan[Plan]:
    """Plan, time the planned shape, re-plan at the measured FLOP/s until the planned
    shape is one already timed. `plan_for(budget, shape)` plans for a budget, with the
    shape fixed when one is given. After MAX_TIMED_SHAPES timings without agreement the
    smallest shape timed is kept (it reads the most tokens)."""
    plan = plan_for(budget, None)
    timed: dict[tuple[int, int], Throughput] = {}
    order: list[Throughput] = []
    while shape_of(plan) not in timed and len(timed) < MAX_TIMED_SHAPES:
        timing = measure(plan)
        timed[shape_of(plan)] = timing
        order.append(timing)
        plan = plan_for(replace(budget, flops_per_s=timing.flops_per_s), None)
    shape = shape_of(plan)
    if shape not in timed:
        shape = min(timed, key=lambda s: timed[s].flops_per_token)
    timing = timed[shape]
    plan = plan_for(replace(budget, flops_per_s=timing.flops_per_s), shape)
    return MeasuredPlan(plan, timing, order)


def evaluation_interval(steps: int) -> int:
    """Steps between evaluations: about TARGET_EVALUATIONS over the run, at least 10."""
    return max(10, steps // TARGET_EVALUATIONS)


def tokens_in_minutes(
    timing: Throughput, minutes: float, eval_batches_for: Callable[[int], int]
) -> tuple[int, dict[str, Any]]:
    """Tokens the timed shape reads in `minutes` once evaluations and checkpoints are
    paid for, and the arithmetic for recipe.json. `eval_batches_for(eval_every)` is the
    recipe's tuning batches an evaluation."""
    seconds = 60.0 * minutes
    steps = max(1, int(seconds / timing.step_s))
    eval_every = eval_batches = 0
    overhead = 0.0
    for _ in range(3):  # the interval depends on the steps and the steps on its cost
        eval_every = evaluation_interval(steps)
        eval_batches = eval_batches_for(eval_every)
        overhead = eval_batches * timing.eval_batch_s
        overhead += CHECKPOINTS_PER_EVALUATION * timing.checkpoint_s
        steps = max(1, int(seconds / (timing.step_s + overhead / eval_every)))
    tokens = int(math.floor(steps * timing.tokens_per_step))
    arithmetic = {
        "seconds": seconds,
        "steps": steps,
        "evaluation_s": round(overhead, 4),
        "evaluation_share": round(overhead / (eval_every * timing.step_s + overhead), 4),
        "tokens": tokens,
    }
    return tokens, arithmetic
