"""Parameter and FLOP counts against hand formulas and the built model."""

from __future__ import annotations

import pytest

from seqlm.model import GPT, GPTConfig, flops_per_token, parameter_count, preset
from seqlm.model.flops import forward_flops_per_token, parameter_breakdown


def hand_count(config: GPTConfig) -> int:
    """Written out per tensor, GPT-2 style names, for a pre-LN LayerNorm model with bias."""
    c, v, r = config.n_embd, config.vocab_size, config.mlp_ratio
    per_block = (
        2 * c  # ln before attention: weight + bias
        + c * 3 * c
        + 3 * c  # qkv weight + bias
        + c * c
        + c  # attention out projection
        + 2 * c  # ln before mlp
        + c * r * c
        + r * c  # mlp up
        + r * c * c
        + c  # mlp down
    )
    return v * c + config.block_size * c + config.n_layer * per_block + 2 * c


def test_gpt2_small_shape_has_the_known_parameter_count() -> None:
    # GPT-2 small (124M): 12 x 768, vocabulary 50257, context 1024, tied head.
    config = preset("base", vocab_size=50257, block_size=1024)
    assert parameter_count(config) == 124_439_808
    assert parameter_count(config) == hand_count(config)


@pytest.mark.parametrize("name", ["tiny", "micro", "small"])
def test_presets_match_hand_formula_and_built_model(name: str) -> None:
    config = preset(name, vocab_size=97, block_size=48)
    assert parameter_count(config) == hand_count(config)
    if name != "small":  # building the larger presets only repeats the same check slower
        model = GPT(config)
        assert model.num_parameters() == hand_count(config)
        assert (
            model.num_parameters(exclude_embeddings=True)
            == hand_count(config) - 97 * config.n_embd - 48 * config.n_embd
        )


@pytest.mark.parametrize("placement", ["pre", "post", "peri", "mix"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi"])
@pytest.mark.parametrize(("bias", "tied"), [(True, True), (False, False)])
def test_variants_count_what_the_model_holds(placement, norm, positions, bias, tied) -> None:
    config = GPTConfig(
        vocab_size=13,
        n_layer=4,
        n_head=2,
        n_embd=8,
        block_size=6,
        norm_placement=placement,
        norm=norm,
        positions=positions,
        bias=bias,
        tie_embeddings=tied,
    )
    model = GPT(config)
    assert model.num_parameters() == parameter_count(config)
    assert model.num_parameters(exclude_embeddings=True) == parameter_count(
        config, exclude_embeddings=True
    )


def test_breakdown_norm_counts() -> None:
    base = {"vocab_size": 10, "n_layer": 4, "n_head": 2, "n_embd": 8, "block_size": 4}
    pre = parameter_breakdown(GPTConfig(**base))
    peri = parameter_breakdown(GPTConfig(**base, norm_placement="peri"))
    post = parameter_breakdown(GPTConfig(**base, norm_placement="post", norm="rmsnorm"))
    # Peri-LN adds two LayerNorms (weight + bias) per block and one on the embeddings;
    # Post-LN has no final norm.
    assert peri["blocks"] - pre["blocks"] == 4 * 2 * (2 * 8)
    assert peri["embedding_norm"] == 16 and pre["embedding_norm"] == 0
    assert post["final_norm"] == 0 and pre["final_norm"] == 16
    assert pre["lm_head"] == 0


def test_flops_per_token_formula_values() -> None:
    config = GPTConfig(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64)
    n_matmul = parameter_count(config) - 64 * 128  # the position table is a lookup
    assert flops_per_token(config, 64) == 6 * n_matmul + 12 * 4 * 128 * 64
    assert flops_per_token(config) == flops_per_token(config, 64)
    assert flops_per_token(config, 256) - flops_per_token(config, 64) == 12 * 4 * 128 * 192
    assert forward_flops_per_token(config, 64) * 3 == flops_per_token(config, 64)


def test_flops_untied_counts_the_head_not_the_input_table() -> None:
    tied = GPTConfig(vocab_size=1000, n_layer=2, n_head=2, n_embd=32, block_size=16)
    untied = GPTConfig(**{**tied.to_dict(), "tie_embeddings": False})
    # Same matrix multiplies: the untied model's extra table is only looked up.
    assert flops_per_token(untied, 16) == flops_per_token(tied, 16)
    assert parameter_count(untied) - parameter_count(tied) == 1000 * 32


def test_gpt2_small_flops_per_token() -> None:
    # nanoGPT's estimate for GPT-2 124M at T=1024: 6N + 12*L*H*Q*T, N without wpe.
    config = preset("base", vocab_size=50257, block_size=1024)
    n = 124_439_808 - 1024 * 768
    assert flops_per_token(config) == 6 * n + 12 * 12 * 12 * 64 * 1024
