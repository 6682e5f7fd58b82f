"""The recipe's large-corpus rule (seqlm/training/recipe_large.py): where it applies,
the context cap, the size caps, and that the small-data rule is untouched below it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from helpers.clinical_run import mimic_demo_corpus

from seqlm.model.token_parts import token_part_map
from seqlm.training import recipe as common
from seqlm.training.recipe import CorpusFacts, choose_recipe, parse_budget
from seqlm.training.recipe_basis import SHAPE_LADDER
from seqlm.training.recipe_large import (
    LARGE_BUDGET_TOKENS_PER_PARAM,
    LARGE_CORPUS_TRAIN_TOKENS,
    LARGE_DEPTH,
    LARGE_PARTS_MIN_SHARE,
    LARGE_SHAPE_LADDER,
    WINDOWED_CONTEXT,
    is_large,
    large_corpus_plan,
)


def mimic_like(train_tokens: int = 849_879, p95: int = 37_804) -> CorpusFacts:
    """The MIMIC-IV demo's default clinical corpus as the recipe reads it."""
    return CorpusFacts(
        train_tokens=train_tokens,
        train_sequences=80,
        tuning_tokens=73_510,
        vocab_size=4_164,
        length_p50=4_862,
        length_p95=p95,
        length_max=54_451,
    )


def params(recipe) -> int:
    return 12 * recipe.model["n_layer"] * recipe.model["n_embd"] ** 2


def test_the_threshold_decides_which_rule_applies():
    assert is_large(mimic_like(LARGE_CORPUS_TRAIN_TOKENS))
    assert not is_large(mimic_like(LARGE_CORPUS_TRAIN_TOKENS - 1))
    assert large_corpus_plan(mimic_like(100_000), parse_budget("1Mtok"), "cpu") is None


@pytest.mark.parametrize("budget", ["2Mtok", "10m", "1e13flops"])
def test_below_the_threshold_the_small_data_rule_decides_unchanged(budget):
    facts = mimic_like(LARGE_CORPUS_TRAIN_TOKENS - 1)
    spec = parse_budget(budget)
    context = common._context(facts)
    shape, tokens, _ = common._size(facts, spec, context, "cpu")
    recipe = choose_recipe(facts, spec)
    assert recipe.model["block_size"] == context == 512
    assert (recipe.model["n_layer"], recipe.model["n_embd"]) == shape
    assert recipe.expected_tokens == tokens
    assert "large-corpus" not in recipe.reasons["n_layer/n_embd"]


def test_long_records_get_short_rotary_windows_and_short_ones_their_length():
    long = choose_recipe(mimic_like(), parse_budget("1Mtok"))
    assert WINDOWED_CONTEXT == 64
    assert long.model["block_size"] == 64 and long.model["positions"] == "rotary"
    assert long.train["batch_size"] == 16  # 16 windows in a step of 1,024 tokens
    assert "rotary" in long.reasons["positions"] and "windowed" in long.reasons["block_size"]
    short = choose_recipe(mimic_like(p95=100), parse_budget("1Mtok"))
    assert short.model["block_size"] == 128 and short.train["batch_size"] == 8
    assert short.model["positions"] == "learned"


def test_the_small_data_rule_chooses_rotary_positions_and_says_why():
    recipe = choose_recipe(mimic_like(LARGE_CORPUS_TRAIN_TOKENS - 1), parse_budget("1Mtok"))
    assert recipe.model["positions"] == "rotary"
    assert "small corpora" in recipe.reasons["positions"]
    assert "ALiBi" in recipe.reasons["positions"]  # the other option measured, and why not


def test_the_size_is_the_widest_two_block_shape_the_data_and_the_budget_allow():
    # 2M+ tokens: the data cap (2.5 x 849,879 = 2.12M) decides: 2 x 256 (1.57M
    # parameters; 2 x 320 would hold 2.46M), whatever the budget above it.
    for budget in ("2Mtok", "6Mtok"):
        recipe = choose_recipe(mimic_like(), parse_budget(budget))
        assert (recipe.model["n_layer"], recipe.model["n_embd"]) == (2, 256)
        assert recipe.model["n_head"] == 8 and recipe.train["batch_size"] == 16
        assert recipe.train["lr"] == pytest.approx(3e-3 * (128 / 256) ** 0.5, rel=1e-3)
    # 1M tokens: the budget decides (at most one parameter per token read): 2 x 192.
    small = choose_recipe(mimic_like(), parse_budget("1Mtok"))
    assert (small.model["n_layer"], small.model["n_embd"]) == (2, 192)
    for recipe in (small, choose_recipe(mimic_like(), parse_budget("400ktok"))):
        n = params(recipe)
        tokens = recipe.expected_tokens
        assert n * LARGE_BUDGET_TOKENS_PER_PARAM <= tokens and n <= 2.5 * 849_879
        larger = LARGE_SHAPE_LADDER[
            LARGE_SHAPE_LADDER.index((recipe.model["n_layer"], recipe.model["n_embd"])) + 1
        ]
        assert 12 * larger[0] * larger[1] ** 2 > min(tokens, 2.5 * 849_879)


def test_the_large_ladder_grows_wider_before_deeper_and_only_grows():
    sizes = [12 * layers * width**2 for layers, width in LARGE_SHAPE_LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    shallow = [shape for shape in LARGE_SHAPE_LADDER if shape[0] == LARGE_DEPTH]
    assert LARGE_DEPTH == 2 and shallow == list(LARGE_SHAPE_LADDER[: len(shallow)])
    assert shallow[-1] == (2, 384)
    deeper = list(LARGE_SHAPE_LADDER[len(shallow) :])
    assert deeper and all(shape in SHAPE_LADDER for shape in deeper)
    # a corpus whose data cap passes 2 x 384 gets the common ladder's deeper shapes
    big = choose_recipe(mimic_like(train_tokens=3_000_000), parse_budget("20Mtok"))
    assert big.model["n_layer"] > LARGE_DEPTH
    assert params(big) <= 2.5 * 3_000_000


def test_a_tiny_budget_still_gets_the_smallest_shape():
    recipe = choose_recipe(mimic_like(), parse_budget("1ktok"))
    assert (recipe.model["n_layer"], recipe.model["n_embd"]) == LARGE_SHAPE_LADDER[0]


def test_a_budget_in_minutes_walks_down_until_the_model_can_be_trained():
    recipe = choose_recipe(mimic_like(), parse_budget("30m"))
    assert params(recipe) <= recipe.expected_tokens
    assert params(choose_recipe(mimic_like(), parse_budget("5m"))) < params(recipe)


def test_the_record_says_the_large_corpus_rule_chose_and_why():
    recipe = choose_recipe(mimic_like(), parse_budget("3.5Mtok"))
    record = json.loads(json.dumps(recipe.to_dict()))
    assert "large-corpus rule" in record["reasons"]["n_layer/n_embd"]
    assert "windows of 64 with rotary positions" in record["reasons"]["block_size"]
    assert record["model"]["positions"] == "rotary"
    assert "1,572,864 non-embedding parameters" in record["reasons"]["n_layer/n_embd"]
    assert "2 blocks, wider before deeper" in record["reasons"]["n_layer/n_embd"]
    assert record["model"]["dropout"] == 0.0  # about 4 epochs: no dropout (common rule)


def test_sequences_that_fit_512_are_read_whole():
    """A large corpus of sequences up to 512 tokens (a planted corpus with 50-300-token
    gaps holds 600k+ train tokens) keeps whole sequences: a 256 cap would cut the
    dependency it exists to show."""
    recipe = choose_recipe(mimic_like(p95=350), parse_budget("1Mtok"))
    assert recipe.model["block_size"] == 512
    assert "read whole" in recipe.reasons["block_size"]
    assert recipe.model["positions"] == "learned"
    windowed = choose_recipe(mimic_like(p95=600), parse_budget("1Mtok"))
    assert windowed.model["block_size"] == 64 and windowed.model["positions"] == "rotary"


@pytest.mark.parametrize(
    ("fused", "expected"), [(3_801, True), (1_041, True), (1_040, False), (0, False)]
)
def test_part_shared_embeddings_when_a_quarter_of_the_vocabulary_is_fused(fused, expected):
    # 4,164 tokens: a quarter is 1,041.
    facts = replace(mimic_like(), fused_tokens=fused)
    assert fused / facts.vocab_size >= LARGE_PARTS_MIN_SHARE or not expected
    recipe = choose_recipe(facts, parse_budget("1Mtok"))
    assert recipe.model["token_parts"] is expected
    assert recipe.reasons["token_parts"].startswith(f"{fused / facts.vocab_size:.0%} of")


def test_small_corpora_keep_the_plain_table_whatever_they_fuse():
    facts = replace(mimic_like(LARGE_CORPUS_TRAIN_TOKENS - 1), fused_tokens=4_000)
    recipe = choose_recipe(facts, parse_budget("1Mtok"))
    assert "token_parts" not in recipe.model
    assert "token_parts" not in recipe.reasons


def test_the_demo_corpus_counts_its_fused_tokens(tmp_path):
    # Real data: the MIMIC-IV demo's default tokens (3,801 of 5,123 fuse a code and a
    # value); the birdsong corpus has none.
    corpus = mimic_demo_corpus(tmp_path / "C")
    facts = CorpusFacts.of(corpus)
    assert facts.fused_tokens == int((token_part_map(corpus.vocabulary).code_ids > 0).sum())
    assert 0.5 * facts.vocab_size < facts.fused_tokens < facts.vocab_size
    assert choose_recipe(facts, parse_budget("1Mtok")).model["token_parts"] is True
