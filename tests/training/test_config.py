"""Run settings: TOML [model]/[train] tables, --set strings, aliases, validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.training.budget import Counters
from seqlm.training.config import DEFAULT_STEPS, TrainConfig, resolve_settings


def test_defaults():
    settings = resolve_settings()
    assert settings.preset == "micro"
    assert settings.model == {}
    assert settings.train.max_steps == DEFAULT_STEPS
    assert settings.train.budget().steps == DEFAULT_STEPS


def test_aliases_and_toml_literals_from_set_strings():
    settings = resolve_settings(
        sets=[
            "model.layers=6",
            "model.width=384",
            "model.context=256",
            "model.dropout=0.1",
            "train.steps=500",
            "train.lr=1e-3",
            "train.decay=linear",
            "train.compile=true",
        ]
    )
    assert settings.model == {"n_layer": 6, "n_embd": 384, "block_size": 256, "dropout": 0.1}
    assert settings.train.max_steps == 500
    assert settings.train.lr == 1e-3
    assert settings.train.decay == "linear"
    assert settings.train.compile is True


def test_file_then_sets_then_preset_option(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        '[model]\npreset = "small"\nheads = 4\n\n[train]\nminutes = 2.5\nbatch = 8\nlr = 0.01\n'
    )
    settings = resolve_settings(config, sets=["train.lr=0.02"])
    assert settings.preset == "small"
    assert settings.model == {"n_head": 4}
    assert settings.train.max_minutes == 2.5
    assert settings.train.max_steps is None  # a time budget alone
    assert settings.train.batch_size == 8
    assert settings.train.lr == 0.02
    assert resolve_settings(config, preset="micro").preset == "micro"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["optim.lr=1"], "unknown config table"),
        (["model.vocab_size=10"], "comes from the corpus"),
        (["train.learning_rate=1"], "unknown option"),
        (["train.steps=many"], "integer"),
        (["train.batch_size=0"], "at least 1"),
        (["train.lr=-1"], "positive"),
        (["train.beta2=1.0"], r"\[0, 1\)"),
        (["train.packing=zip"], "must be one of"),
        (["model.layers=2", "model.n_layer=3"], "given twice"),
        (["train.steps=0"], "positive"),
    ],
)
def test_bad_settings_are_config_errors(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings(sets=sets)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_settings(broken)


def test_train_config_round_trips_through_a_dict():
    config = TrainConfig(max_tokens=10_000, batch_size=4, decay="linear", early_stopping=3)
    assert TrainConfig.from_dict(config.to_dict()) == config


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "model.layers",
                    "model.context",
                    "model.x",
                    "train.steps",
                    "train.lr",
                    "train.decay",
                    "train.batch",
                    "train.minutes",
                    "train",
                    "model",
                    "zzz",
                    "",
                ]
            ),
            st.one_of(
                st.integers(-5, 10**6).map(str),
                st.floats(allow_nan=True).map(str),
                st.sampled_from(["true", "cosine", "linear", "[1, 2]", "{a = 1}", "'x'", ""]),
                st.text(max_size=12),
            ),
        ),
        max_size=4,
    )
)
def test_any_set_strings_give_settings_or_a_config_error(pairs):
    try:
        settings_ = resolve_settings(sets=[f"{key}={value}" for key, value in pairs])
    except ConfigError:
        return
    # A config that passes validation has a usable budget and a positive batch.
    assert settings_.train.budget().progress(Counters()) == 0.0
    assert settings_.train.batch_size >= 1
