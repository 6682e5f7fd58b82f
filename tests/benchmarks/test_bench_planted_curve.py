"""benchmarks/bench_planted_curve.py: telling a curve that never moved from a plateau
that ended, on the curves measured in docs/training.md ("Planted structure")."""

from __future__ import annotations

import math

from helpers.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_planted_curve")


def _rows(first: list[float], later: list[float]) -> list[dict]:
    return [
        {
            "step": 32 * (i + 1),
            "tokens": 127_000 * (i + 1),
            "first": {"n": 300, "ce": f, "top1": 0.25},
            "later": {"n": 900, "ce": g, "top1": 0.25},
        }
        for i, (f, g) in enumerate(zip(first, later, strict=True))
    ]


def test_a_curve_at_chance_never_left_it():
    bench = _bench()
    rows = _rows([1.43, 1.41, 1.39, 1.39], [1.44, 1.40, 1.39, 1.388])
    assert bench.left_chance(rows, "first") == {"answers": "first", "left_chance": None}
    assert bench.left_chance(rows, "later")["left_chance"] is None


def test_a_plateau_that_ends_is_found_where_it_stays_below_chance():
    bench = _bench()
    # 50-500 seed 0, 4M tokens: the later answers leave chance late and stay below it.
    later = [1.39, 1.377, 1.30, 1.33, 1.273]
    rows = _rows([1.39] * 5, later)
    verdict = bench.left_chance(rows, "later")
    assert verdict["left_chance"] == 96 and verdict["tokens"] == 3 * 127_000
    # a dip that comes back above chance - margin does not count
    dip = _rows([1.39, 1.30, 1.40, 1.39, 1.39], later)
    assert bench.left_chance(dip, "first")["left_chance"] is None
    assert math.log(4) - bench.LEFT_CHANCE_MARGIN > 1.33


def test_no_answers_is_not_found():
    bench = _bench()
    rows = [{"step": 1, "tokens": 1, "first": {"n": 0}, "later": {"n": 0}}]
    assert bench.left_chance(rows, "first")["left_chance"] is None
