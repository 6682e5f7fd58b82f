"""The training recipe: budgets parsed, shapes chosen from the data, user settings win,
and the run records what was chosen and why."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.training.config import resolve_settings
from seqlm.training.recipe import (
    BudgetSpec,
    CorpusFacts,
    Recipe,
    apply_recipe,
    choose_recipe,
    heads_for,
    parse_budget,
)
from seqlm.training.recipe_context import rows_per_step


def facts(train_tokens: int, p95: int = 100, vocab: int = 30) -> CorpusFacts:
    return CorpusFacts(
        train_tokens=train_tokens,
        train_sequences=max(1, train_tokens // 80),
        tuning_tokens=train_tokens // 8,
        vocab_size=vocab,
        length_p50=p95 // 2,
        length_p95=p95,
        length_max=p95 * 2,
    )


def test_budgets_parse_to_one_unit():
    assert parse_budget("10m") == BudgetSpec(minutes=10.0)
    assert parse_budget("90s").minutes == pytest.approx(1.5)
    assert parse_budget("1.5h") == BudgetSpec(minutes=90.0)
    assert parse_budget("2Mtok") == BudgetSpec(tokens=2_000_000)
    assert parse_budget("500000tokens") == BudgetSpec(tokens=500_000)
    assert parse_budget("1e15flops") == BudgetSpec(flops=1e15)


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "-5m", "0m", "5 parsecs", "1e3"])
def test_bad_budgets_are_refused_with_the_forms_that_work(text):
    with pytest.raises(ConfigError, match="--budget|positive"):
        parse_budget(text)


@given(st.text(max_size=12))
def test_budget_parser_never_raises_anything_but_config_errors(text):
    try:
        spec = parse_budget(text)
    except ConfigError:
        return
    assert sum(v is not None for v in dataclasses.astuple(spec)) == 1


def test_small_data_gets_a_small_regularised_model_and_big_data_a_bigger_one():
    small = choose_recipe(facts(6_000), parse_budget("2Mtok"))
    large = choose_recipe(facts(1_500_000), parse_budget("200Mtok"))
    small_params = 12 * small.model["n_layer"] * small.model["n_embd"] ** 2
    large_params = 12 * large.model["n_layer"] * large.model["n_embd"] ** 2
    assert small_params <= 2.5 * 6_000 < large_params
    assert small.model["dropout"] > 0  # hundreds of epochs: regularised
    assert small.train["early_stopping"] > 0
    assert small.train["max_tokens"] == 2_000_000


def test_a_small_budget_caps_the_size_and_reads_under_an_epoch_without_dropout():
    recipe = choose_recipe(facts(300_000), parse_budget("200ktok"))
    params = 12 * recipe.model["n_layer"] * recipe.model["n_embd"] ** 2
    assert params * 10 <= 200_000
    assert recipe.model["dropout"] == 0.0
    # a large corpus (recipe_large.py) allows one parameter per token read
    recipe = choose_recipe(facts(1_500_000, vocab=5_000), parse_budget("500ktok"))
    params = 12 * recipe.model["n_layer"] * recipe.model["n_embd"] ** 2
    assert params * 10 > 500_000 >= params
    assert recipe.model["dropout"] == 0.0


def test_context_covers_the_sequences_within_limits():
    assert choose_recipe(facts(50_000, p95=145)).model["block_size"] == 256
    assert choose_recipe(facts(50_000, p95=10)).model["block_size"] == 32
    assert choose_recipe(facts(400_000, p95=9000)).model["block_size"] == 512
    large = facts(5_000_000, p95=9000, vocab=5_000)
    assert choose_recipe(large).model["block_size"] == 64  # the large-corpus rule's windows


def test_a_large_corpus_of_few_symbols_keeps_the_common_rule():
    """The large-corpus rule (wide two-block shapes, learned positions for whole
    sequences) was chosen for clinical vocabularies; a 680k-token corpus of 27 symbols
    keeps the common rule, whose plan found a planted 50-500 dependency on two corpus
    seeds (docs/training.md, session 9): 4 x 96, rotary, lr 3e-3, 8 rows of 512."""
    planted = CorpusFacts(
        train_tokens=683_502,
        train_sequences=2_400,
        tuning_tokens=85_000,
        vocab_size=27,
        length_p50=270,
        length_p95=488,
        length_max=511,
    )
    recipe = choose_recipe(planted, parse_budget("6Mtok"))
    model = recipe.model
    assert (model["n_layer"], model["n_embd"], model["positions"]) == (4, 96, "rotary")
    assert (model["block_size"], recipe.train["batch_size"], recipe.train["lr"]) == (512, 8, 0.003)
    clinical = choose_recipe(replace(planted, vocab_size=5_123), parse_budget("6Mtok"))
    assert clinical.model["n_layer"] == 2  # the large-corpus rule's two blocks


def test_heads_divide_the_width():
    for width in (32, 48, 64, 80, 96, 160, 192, 384):
        assert width % heads_for(width) == 0 and heads_for(width) >= 2


def test_every_choice_has_a_reason_and_the_record_is_json():
    recipe = choose_recipe(facts(100_000), parse_budget("1e14flops"))
    assert isinstance(recipe, Recipe)
    record = json.loads(json.dumps(recipe.to_dict()))
    for key in ("block_size", "n_layer/n_embd", "dropout", "lr", "eval_every", "early_stopping"):
        assert record["reasons"][key]
    assert record["expected_tokens"] > 0 and record["budget"].endswith("FLOPs")


class _Corpus:
    """What apply_recipe reads of a corpus."""

    def __init__(self, corpus):
        self._corpus = corpus
        self.path = corpus.path
        self.vocab_size = corpus.vocab_size

    def split(self, name):
        return self._corpus.split(name)


def test_explicit_settings_win_over_the_recipe(song_corpus):
    settings = resolve_settings(
        None,
        ["model.width=64", "train.lr=0.01", "train.steps=40"],
        None,
        recipe=True,
    )
    resolved, record = apply_recipe(settings, song_corpus)
    assert resolved.model["n_embd"] == 64 and 64 % resolved.model["n_head"] == 0
    assert resolved.train.lr == 0.01 and resolved.train.max_steps == 40
    assert resolved.train.max_minutes is None and resolved.train.max_tokens is None
    assert record["user_set"] == {"model": ["n_embd"], "train": ["lr", "max_steps"]}
    assert resolved.train.early_stopping > 0  # unset values come from the recipe


def test_the_plan_follows_the_sizes_the_user_set(song_corpus):
    sets = ["model.block_size=256", "model.width=512"]
    settings = resolve_settings(None, sets, None, budget="200ktok", recipe=True)
    resolved, record = apply_recipe(settings, song_corpus)
    plain, _ = apply_recipe(
        resolve_settings(None, [], None, budget="200ktok", recipe=True), song_corpus
    )
    assert plain.model["block_size"] < 256 and plain.model["n_embd"] < 512
    assert resolved.model["block_size"] == 256
    assert resolved.train.batch_size == rows_per_step(256)  # 1,024 tokens a step, as planned
    assert resolved.train.lr == pytest.approx(3e-3 * math.sqrt(128 / 512), rel=1e-3)
    assert "set by the user" in record["reasons"]["block_size"]
    assert "set by the user" in record["reasons"]["n_layer/n_embd"]
    assert record["model"]["block_size"] == 256 and record["model"]["n_embd"] == 512


def test_a_preset_keeps_its_shape_and_budget_sets_only_the_limit(song_corpus):
    settings = resolve_settings(None, [], "tiny", budget="50ktok", recipe=True)
    resolved, record = apply_recipe(settings, song_corpus)
    assert resolved.model == {} and resolved.preset == "tiny"
    assert resolved.train.max_tokens == 50_000 and resolved.train.max_steps is None
    assert record["applied"] is False


def test_no_recipe_for_library_callers_without_one(song_corpus):
    settings = resolve_settings(None, ["train.steps=5"], None)
    assert apply_recipe(settings, song_corpus) == (settings, None)


def test_fine_tuning_lowers_the_learning_rate(song_corpus):
    settings = resolve_settings(None, [], None, budget="50ktok", recipe=True)
    plain, _ = apply_recipe(settings, song_corpus)
    tuned, record = apply_recipe(settings, song_corpus, fine_tune=True)
    assert tuned.train.lr == pytest.approx(plain.train.lr / 3, rel=1e-3)
    assert "fine-tune" in record["reasons"]["lr"]
    assert "dropout" in plain.model and "dropout" not in tuned.model  # the init run's stays
    assert "--init" in record["reasons"]["dropout"]


def test_the_run_writes_recipe_json_and_config_says_recipe(song_corpus, tmp_path):
    from seqlm.training.session import train_on_corpus

    settings = resolve_settings(None, ["train.cpu_threads=1"], None, budget="8ktok", recipe=True)
    result = train_on_corpus(song_corpus.path, tmp_path / "run", settings)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert config["preset"] == "recipe" and config["recipe"] == recipe
    assert config["model"]["n_embd"] == recipe["model"]["n_embd"]
    assert result.tokens >= 8_000 and result.stop_reason in ("budget", "early_stopping")
    warnings = json.loads((tmp_path / "run" / "warnings.json").read_text())
    assert warnings["evaluations"] >= 1
