"""GPTConfig validation, JSON round trip, per-layer resolution and presets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError, SeqlmError
from seqlm.model.config import PRESETS, GPTConfig, preset


def small(**overrides) -> GPTConfig:
    values = {"vocab_size": 11, "n_layer": 4, "n_head": 2, "n_embd": 16, "block_size": 8}
    values.update(overrides)
    return GPTConfig(**values)


def test_to_dict_from_dict_round_trip_through_json() -> None:
    config = small(
        positions="rotary",
        norm="rmsnorm",
        norm_placement="mix",
        mix_ln_fraction=0.5,
        layer_spans=[2, None, 3, None],
        bias=False,
        tie_embeddings=False,
        dropout=0.1,
    )
    text = json.dumps(config.to_dict())
    again = GPTConfig.from_dict(json.loads(text))
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    values = small().to_dict()
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) model.n_layers \(did you mean model.n_layer\?\)"
    ):
        GPTConfig.from_dict({**values, "n_layers": 3})
    del values["vocab_size"]
    with pytest.raises(ConfigError, match="missing required option.*model.vocab_size"):
        GPTConfig.from_dict(values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_embd": 15}, "divisible"),
        ({"n_layer": 0}, "at least 1"),
        ({"n_layer": True}, "integer"),
        ({"n_head": 2.0}, "integer"),
        ({"positions": "sinusoidal"}, "positions"),
        ({"norm": "batchnorm"}, "norm"),
        ({"norm_placement": "sandwich"}, "norm_placement"),
        ({"dropout": 1.0}, "dropout"),
        ({"mix_ln_fraction": 1.5}, "mix_ln_fraction"),
        ({"attention_span": 0}, "attention_span"),
        ({"layer_spans": [1, 2]}, "2 entries for 4 layers"),
        ({"layer_spans": [1, 2, 0, None]}, r"layer_spans\[2\]"),
        ({"attention_span": 2, "layer_spans": [1, 1, 1, 1]}, "not both"),
        ({"bias": 1}, "true or false"),
        ({"n_embd": 12, "n_head": 4, "positions": "rotary"}, "even head size"),
        ({"loss_impl": ""}, "loss_impl"),
    ],
)
def test_invalid_values_raise_config_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        small(**overrides)


@given(
    st.dictionaries(
        st.sampled_from([f.name for f in GPTConfig.__dataclass_fields__.values()]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-3, 70),
            st.floats(allow_nan=True),
            st.text(max_size=5),
            st.lists(st.one_of(st.none(), st.integers(-1, 5)), max_size=5),
        ),
    )
)
@settings(max_examples=200, deadline=None)
def test_from_dict_raises_only_config_errors(values: dict) -> None:
    """Whatever a config.json holds, loading it gives a config or a ConfigError."""
    base = small().to_dict()
    base.update(values)
    try:
        GPTConfig.from_dict(base)
    except SeqlmError as error:
        assert isinstance(error, ConfigError)


def test_mix_placement_is_post_then_pre() -> None:
    assert small(norm_placement="mix").placement_per_layer() == ["post", "pre", "pre", "pre"]
    assert small(norm_placement="mix", mix_ln_fraction=0.5).placement_per_layer() == [
        "post",
        "post",
        "pre",
        "pre",
    ]
    assert small(norm_placement="mix", mix_ln_fraction=0.0).placement_per_layer() == ["pre"] * 4
    assert small(norm_placement="peri").placement_per_layer() == ["peri"] * 4


def test_spans_per_layer() -> None:
    assert small().spans_per_layer() == [None] * 4
    assert small(attention_span=3).spans_per_layer() == [3] * 4
    assert small(layer_spans=(1, None, 2, 2)).spans_per_layer() == [1, None, 2, 2]


def test_presets_have_the_documented_shapes() -> None:
    shapes = {name: (p.n_layer, p.n_embd) for name, p in PRESETS.items()}
    assert shapes["micro"] == (4, 256)
    assert shapes["small"] == (8, 512)
    assert shapes["base"] == (12, 768)
    config = preset("base", vocab_size=1000, block_size=512)
    assert (config.n_layer, config.n_head, config.n_embd, config.head_dim) == (12, 12, 768, 64)
    assert config.vocab_size == 1000 and config.block_size == 512


def test_preset_overrides_and_errors() -> None:
    config = preset("micro", 100, 64, positions="rotary", n_layer=6)
    assert config.positions == "rotary" and config.n_layer == 6 and config.n_embd == 256
    with pytest.raises(ConfigError, match="no model preset named 'huge'"):
        preset("huge", 100, 64)
    with pytest.raises(ConfigError, match="unknown option.*model.width"):
        preset("micro", 100, 64, width=3)
