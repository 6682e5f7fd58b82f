"""A budget in minutes is planned from measured speed: the values chosen follow the
measurement, the run records it, and a resumed run reuses the plan without measuring."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from seqlm.training.callbacks import TrainCallback
from seqlm.training.config import resolve_settings
from seqlm.training.recipe import (
    MAX_MINUTE_BUDGET_EPOCHS,
    CorpusFacts,
    choose_recipe,
    parse_budget,
)
from seqlm.training.recipe_basis import _flops_per_token
from seqlm.training.recipe_minutes import (
    MAX_TIMED_SHAPES,
    evaluation_interval,
    tokens_in_minutes,
)
from seqlm.training.throughput import Throughput, measure_throughput

FINCH_LIKE = CorpusFacts(
    train_tokens=45_445,
    train_sequences=1_147,
    tuning_tokens=5_730,
    vocab_size=19,
    length_p50=25,
    length_p95=130,
    length_max=1_229,
)


def timing(model: dict, rows: int, tokens_per_s: float, **extra) -> Throughput:
    """A measurement at a fixed speed in tokens a second, whatever the shape."""
    context = int(model["block_size"])
    tokens_per_step = float(rows * context)
    values = {
        "n_layer": int(model["n_layer"]),
        "n_embd": int(model["n_embd"]),
        "context": context,
        "rows": rows,
        "threads": 1,
        "timed_steps": 5,
        "step_s": tokens_per_step / tokens_per_s,
        "step_cpu_s": tokens_per_step / tokens_per_s,
        "tokens_per_step": tokens_per_step,
        "eval_batch_s": 0.0,
        "checkpoint_s": 0.0,
        "flops_per_token": _flops_per_token(
            int(model["n_layer"]), int(model["n_embd"]), 19, context
        ),
        "spent_s": 1.0,
    }
    return Throughput(**{**values, **extra})


def test_a_minute_budget_reads_the_tokens_the_measured_speed_gives():
    calls = []

    def measure(model, rows):
        calls.append((model["n_layer"], model["n_embd"]))
        return timing(model, rows, tokens_per_s=2_000.0)

    recipe = choose_recipe(FINCH_LIKE, parse_budget("10m"), measure=measure)
    assert recipe.expected_tokens == pytest.approx(600 * 2_000, rel=0.01)
    assert recipe.train["max_tokens"] == recipe.expected_tokens
    assert recipe.train["max_minutes"] == 10.0  # the user's limit still holds
    steps = recipe.expected_tokens // (recipe.train["batch_size"] * 256)
    assert recipe.train["eval_every"] == evaluation_interval(steps)
    assert calls[-1] == (recipe.model["n_layer"], recipe.model["n_embd"])
    record = json.loads(json.dumps(recipe.to_dict()))
    assert record["throughput"]["chosen"]["tokens_per_s"] == pytest.approx(2_000.0)
    assert record["throughput"]["plan"]["tokens"] == recipe.expected_tokens
    assert "measured 2,000 tokens/s" in record["reasons"]["max_tokens"]


def test_a_slower_machine_gets_fewer_tokens_a_smaller_model_and_closer_evaluations():
    fast = choose_recipe(FINCH_LIKE, parse_budget("10m"), measure=lambda m, r: timing(m, r, 2e4))
    slow = choose_recipe(FINCH_LIKE, parse_budget("10m"), measure=lambda m, r: timing(m, r, 5e2))
    assert slow.expected_tokens < fast.expected_tokens / 10
    slow_params = slow.model["n_layer"] * slow.model["n_embd"] ** 2
    assert slow_params < fast.model["n_layer"] * fast.model["n_embd"] ** 2
    assert slow.train["eval_every"] < fast.train["eval_every"]
    assert slow.model["dropout"] <= fast.model["dropout"]  # fewer epochs read


def test_without_a_measurement_the_assumed_speed_plans_as_before():
    larger = replace(FINCH_LIKE, train_tokens=400_000)  # 10 minutes read it < 100 times
    recipe = choose_recipe(larger, parse_budget("10m"))
    assert "max_tokens" not in recipe.train and recipe.throughput is None
    assert "throughput" not in recipe.to_dict()


@pytest.mark.parametrize("measured", [True, False])
def test_a_minute_budget_plans_at_most_100_epochs_of_a_small_corpus(measured):
    """Ten minutes read a 45k-token corpus hundreds of times: the plan stops at 100 epochs
    (so the decay ends within them), with the same shape; a token budget is the user's."""
    measure = (lambda m, r: timing(m, r, 2e4)) if measured else None
    recipe = choose_recipe(FINCH_LIKE, parse_budget("10m"), measure=measure)
    cap = MAX_MINUTE_BUDGET_EPOCHS * FINCH_LIKE.train_tokens
    assert recipe.expected_tokens == cap == recipe.train["max_tokens"]
    assert recipe.train["max_minutes"] == 10.0
    assert recipe.reasons["max_tokens"].startswith("100 epochs of the 45,445 train tokens")
    assert recipe.model["dropout"] == 0.2  # 100 epochs read
    steps = cap // (recipe.train["batch_size"] * recipe.model["block_size"])
    assert recipe.train["eval_every"] == evaluation_interval(steps)
    if measured:
        assert "measured 20,000 tokens/s" in recipe.reasons["max_tokens"]
        uncapped = recipe.throughput["plan"]["tokens"]
        assert uncapped > cap  # what the minutes would have read, still recorded
        shape = (recipe.model["n_layer"], recipe.model["n_embd"])
        tokens_budget = choose_recipe(FINCH_LIKE, parse_budget(f"{uncapped}tok"))
        assert (tokens_budget.model["n_layer"], tokens_budget.model["n_embd"]) == shape
        assert tokens_budget.train["max_tokens"] == uncapped  # never capped


def test_token_budgets_measure_nothing():
    def measure(model, rows):
        raise AssertionError("a token budget needs no measurement")

    recipe = choose_recipe(FINCH_LIKE, parse_budget("500ktok"), measure=measure)
    assert recipe.train["max_tokens"] == 500_000


def test_shapes_are_retimed_until_the_plan_agrees_and_at_most_a_few_times():
    calls = []

    def measure(model, rows):
        calls.append((model["n_layer"], model["n_embd"]))
        # bigger models measured slower per FLOP: the plan keeps moving down the ladder
        return timing(model, rows, 8e3 / len(calls) ** 2)

    recipe = choose_recipe(FINCH_LIKE, parse_budget("10m"), measure=measure)
    assert 1 <= len(calls) <= MAX_TIMED_SHAPES
    assert len(set(calls)) == len(calls)  # a shape is never timed twice
    chosen = recipe.throughput["chosen"]
    assert (chosen["n_layer"], chosen["n_embd"]) == (
        recipe.model["n_layer"],
        recipe.model["n_embd"],
    )


def test_evaluations_and_checkpoints_are_paid_for_out_of_the_minutes():
    free = timing({"n_layer": 2, "n_embd": 64, "block_size": 256}, 4, 1_000.0)
    paid = timing(
        {"n_layer": 2, "n_embd": 64, "block_size": 256},
        4,
        1_000.0,
        eval_batch_s=free.step_s / 3,
        checkpoint_s=free.step_s,
    )
    tokens_free, _ = tokens_in_minutes(free, 10.0, lambda every: 3)
    tokens_paid, arithmetic = tokens_in_minutes(paid, 10.0, lambda every: 3)
    assert tokens_free == pytest.approx(600_000, rel=0.01)
    every = evaluation_interval(arithmetic["steps"])
    share = (3 * paid.eval_batch_s + 2 * paid.checkpoint_s) / every / paid.step_s
    assert tokens_paid == pytest.approx(tokens_free / (1 + share), rel=0.02)
    assert 0 < arithmetic["evaluation_share"] < 1


def test_measuring_times_real_steps_and_leaves_the_random_state_alone(song_corpus):
    settings = resolve_settings(None, ["train.cpu_threads=1"], None, recipe=True)
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    model = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 64, "dropout": 0.1}
    measured = measure_throughput(song_corpus, model, settings.train, threads=1)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert measured.threads == 1 and measured.timed_steps >= 3
    assert measured.step_s > 0 and measured.eval_batch_s > 0 and measured.checkpoint_s > 0
    assert 0 < measured.tokens_per_step <= settings.train.batch_size * 64
    assert measured.flops_per_s == pytest.approx(measured.tokens_per_s * measured.flops_per_token)


class _StopAt(TrainCallback):
    """Raises after `step`, as a killed process would stop (after its last checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.counters.step == self.step:
            raise KeyboardInterrupt


def test_a_resumed_minute_budget_run_reuses_the_plan_and_matches_a_straight_run(
    song_corpus, tmp_path, monkeypatch
):
    from seqlm.training import recipe as recipe_module
    from seqlm.training.session import train_on_corpus

    # A slow measured machine (30 steps in the 5 minutes): the run, faster than that,
    # ends at its planned tokens, so the schedule is a function of the step alone.
    def ten_seconds_a_step(corpus, model, train, threads):
        rows = train.batch_size
        return timing(model, rows, rows * int(model["block_size"]) / 10.0)

    monkeypatch.setattr(recipe_module, "measure_throughput", ten_seconds_a_step)
    settings = resolve_settings(
        None, ["train.cpu_threads=1", "model.dropout=0.1"], None, budget="5m", recipe=True
    )
    straight = train_on_corpus(song_corpus.path, tmp_path / "straight", settings)
    recipe = json.loads((tmp_path / "straight" / "recipe.json").read_text())
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["train"]["max_tokens"] == recipe["expected_tokens"]
    assert straight.stop_reason in ("budget", "early_stopping")
    assert straight.elapsed_s < 300

    with pytest.raises(KeyboardInterrupt):
        train_on_corpus(song_corpus.path, tmp_path / "resumed", settings, callbacks=[_StopAt(15)])

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resumed run must not measure again")

    monkeypatch.setattr(recipe_module, "measure_throughput", no_measuring)
    resumed = train_on_corpus(song_corpus.path, tmp_path / "resumed", resume=True)
    assert resumed.step == straight.step and resumed.tokens == straight.tokens
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (
        tmp_path / "straight" / "model.safetensors"
    ).read_bytes()
    again = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert again["train"] == config["train"]


def test_the_run_times_what_it_will_train_and_fine_tuning_or_torchrun_time_nothing(
    song_corpus, monkeypatch
):
    from seqlm.training import recipe as recipe_module

    timed = []

    def fake(corpus, model, train, threads):
        timed.append((model["n_layer"], model["n_embd"], train.batch_size, threads))
        return timing(model, train.batch_size, 5_000.0)

    monkeypatch.setattr(recipe_module, "measure_throughput", fake)
    sets = ["model.n_layer=1", "train.batch_size=2", "train.cpu_threads=1"]
    settings = resolve_settings(None, sets, None, budget="2m", recipe=True)
    resolved, record = recipe_module.apply_recipe(settings, song_corpus)
    assert timed and all(t[0] == 1 and t[2] == 2 and t[3] == 1 for t in timed)
    assert resolved.train.max_tokens == record["expected_tokens"]
    assert resolved.train.max_minutes == 2.0 and resolved.model["n_layer"] == 1
    assert record["throughput"]["plan"]["tokens"] == record["expected_tokens"]

    timed.clear()
    recipe_module.apply_recipe(settings, song_corpus, fine_tune=True)
    tokens = resolve_settings(None, ["train.cpu_threads=1"], None, budget="50ktok", recipe=True)
    recipe_module.apply_recipe(tokens, song_corpus)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: every process would time its own
    _, record = recipe_module.apply_recipe(settings, song_corpus)
    assert timed == [] and "throughput" not in record
