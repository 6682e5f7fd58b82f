"""Budgets in steps, tokens or minutes, measured against the counters."""

from __future__ import annotations

import pytest

from seqlm.errors import ConfigError, CorpusError
from seqlm.training.budget import Budget, Counters


def test_progress_is_the_most_used_limit():
    budget = Budget(steps=100, tokens=1000)
    counters = Counters(step=10, tokens=500)
    assert budget.fractions(counters) == {"steps": 0.1, "tokens": 0.5}
    assert budget.progress(counters) == 0.5
    assert not budget.exhausted(counters)
    counters.advance(tokens=500, targets=480)
    assert counters.step == 11 and counters.targets == 480
    assert budget.exhausted(counters)
    assert budget.progress(Counters(step=1000)) == 1.0


def test_wall_clock_budget():
    budget = Budget(seconds=60.0)
    assert budget.uses_wall_clock
    assert budget.progress(Counters(elapsed_s=15.0)) == 0.25
    assert budget.exhausted(Counters(elapsed_s=60.0))
    assert budget.bar_total() == ("seconds", 60.0)


def test_progress_bar_counts_the_first_limit_given():
    assert Budget(steps=5, tokens=7).bar_total() == ("steps", 5.0)
    assert Budget(tokens=7).bar_position(Counters(tokens=3)) == 3.0


def test_a_budget_needs_a_positive_limit():
    with pytest.raises(ConfigError, match="needs steps, tokens or minutes"):
        Budget()
    with pytest.raises(ConfigError, match="positive"):
        Budget(steps=0)
    with pytest.raises(ConfigError, match="positive"):
        Budget(seconds=-1.0)


def test_counters_round_trip_and_reject_garbage():
    counters = Counters(step=3, tokens=300, targets=290, elapsed_s=1.5)
    assert Counters.from_dict(counters.to_dict()) == counters
    with pytest.raises(CorpusError):
        Counters.from_dict({"step": 1})
