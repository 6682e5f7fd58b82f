"""The one settings system (seqlm.config): reading, coercion, strict checks, one error style."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from seqlm.config import (
    bounds_text,
    check_fields,
    coerce,
    load_toml,
    options_from_mapping,
    parse_option_strings,
)
from seqlm.errors import ConfigError
from seqlm.model.config import GPTConfig
from seqlm.settings_help import settings_classes, type_name
from seqlm.training.config import TrainConfig, resolve_settings

BOUND_KEYS = {"min", "max", "above", "below"}


@dataclass
class _Options:
    gap: float = 0.5
    labels: list[str] = field(default_factory=list)
    keep: bool = True
    name: str | None = None


def test_options_from_strings_parse_as_toml_literals():
    mapping = parse_option_strings(["gap=0.25", "labels=['i','j']", "keep=false", "name=bird"])
    options = options_from_mapping(_Options, mapping)
    assert options == _Options(gap=0.25, labels=["i", "j"], keep=False, name="bird")


def test_options_reject_unknown_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown option"):
        options_from_mapping(_Options, {"gapp": 1})
    with pytest.raises(ConfigError, match="number"):
        options_from_mapping(_Options, {"gap": "soon"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_option_strings(["gap"])


def test_unknown_keys_name_the_table_and_the_closest_key():
    with pytest.raises(ConfigError) as caught:
        options_from_mapping(_Options, {"gapp": 1}, prefix="adapter.", hint=" (see docs)")
    message = str(caught.value)
    assert "unknown option(s) adapter.gapp (did you mean adapter.gap?)" in message
    assert message.endswith("(see docs)") and "\n" not in message


@dataclass
class _Inner:
    depth: int = field(default=1, metadata={"help": "depth", "min": 1})


@dataclass
class _Typed:
    count: int = field(default=1, metadata={"help": "a count", "min": 1})
    rate: float = field(default=0.5, metadata={"help": "a rate", "min": 0, "below": 1})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "a mode"})
    flag: bool = field(default=False, metadata={"help": "a flag"})
    limit: int | None = field(default=None, metadata={"help": "a limit", "above": 0})
    sizes: list[int] = field(default_factory=list, metadata={"help": "sizes"})
    where: Path = field(default=Path("."), metadata={"help": "a path"})
    inner: _Inner = field(default_factory=_Inner, metadata={"help": "a table"})

    def __post_init__(self) -> None:
        check_fields(self, prefix="t.")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": "many"}, "option 't.count' must be an integer, got 'many'"),
        ({"count": 0}, "option 't.count' must be at least 1, got 0"),
        ({"rate": 1.0}, "option 't.rate' must be in [0, 1), got 1.0"),
        ({"rate": "fast"}, "option 't.rate' must be a number, got 'fast'"),
        ({"mode": "c"}, "option 't.mode' must be one of ['a', 'b'], got 'c'"),
        ({"flag": "perhaps"}, "option 't.flag' must be true or false, got 'perhaps'"),
        ({"limit": 0}, "option 't.limit' must be positive, got 0"),
        ({"sizes": [1, "x"]}, "option 't.sizes' must be an integer, got 'x'"),
        ({"inner": {"depth": 0}}, "option 't.inner.depth' must be at least 1, got 0"),
        ({"inner": 3}, "option 't.inner' must be a table, got 3"),
    ],
)
def test_every_error_is_one_line_with_key_value_and_what_is_allowed(values, message):
    with pytest.raises(ConfigError) as caught:
        options_from_mapping(_Typed, values, prefix="t.")
    assert str(caught.value) == message


def test_text_is_coerced_from_files_and_set_strings():
    typed = options_from_mapping(
        _Typed,
        {"count": "3", "rate": "0.25", "flag": "yes", "sizes": "1,2", "where": "x", "limit": 4},
    )
    assert (typed.count, typed.rate, typed.flag, typed.sizes) == (3, 0.25, True, [1, 2])
    assert typed.where == Path("x") and typed.limit == 4 and typed.inner == _Inner()


def test_code_gets_strict_checks_and_the_same_normalisation():
    # Built in code, a value is not parsed from text: "3" is not a count.
    with pytest.raises(ConfigError, match="'t.count' must be an integer, got '3'"):
        _Typed(count="3")
    with pytest.raises(ConfigError, match="'t.count' must be an integer, got True"):
        _Typed(count=True)
    with pytest.raises(ConfigError, match="'t.rate' must be a finite number"):
        _Typed(rate=float("nan"))
    # An int for a float field becomes a float, as reading it from a file would.
    built = _Typed(rate=0)
    assert built.rate == 0.0 and isinstance(built.rate, float)
    assert built == options_from_mapping(_Typed, {"rate": 0})


@pytest.mark.parametrize(
    ("metadata", "text"),
    [
        ({"min": 1}, "at least 1"),
        ({"above": 0}, "positive"),
        ({"min": 0, "below": 1}, "in [0, 1)"),
        ({"min": 0, "max": 1}, "in [0, 1]"),
        ({"above": 2, "max": 5}, "above 2 and at most 5"),
        ({}, None),
    ],
)
def test_bounds_text(metadata, text):
    assert bounds_text(metadata) == text


def test_coerce_unions_try_each_type():
    assert coerce(None, int | None, "k") is None
    assert coerce("2", int | None, "k") == 2
    assert coerce(("a", "b"), tuple[str, ...], "k") == ("a", "b")


@pytest.mark.parametrize(
    ("sets", "build"),
    [
        (["train.batch_size=0"], lambda: TrainConfig(batch_size=0)),
        (["train.beta2=1.0"], lambda: TrainConfig(beta2=1.0)),
        (["train.decay=step"], lambda: TrainConfig(decay="step")),
    ],
)
def test_a_setting_fails_the_same_way_from_the_command_line_and_from_code(sets, build):
    with pytest.raises(ConfigError) as from_text:
        resolve_settings(sets=sets)
    with pytest.raises(ConfigError) as from_code:
        build()
    assert str(from_text.value) == str(from_code.value)
    assert str(from_code.value).startswith("option 'train.")


def test_model_config_reads_like_the_other_tables():
    values = {"vocab_size": 5, "n_layer": 1, "n_head": 1, "n_embd": 4, "block_size": 8}
    with pytest.raises(ConfigError) as from_dict:
        GPTConfig.from_dict({**values, "dropout": 1.0})
    with pytest.raises(ConfigError) as built:
        GPTConfig(**values, dropout=1.0)
    assert (
        str(from_dict.value)
        == str(built.value)
        == ("option 'model.dropout' must be in [0, 1), got 1.0")
    )
    hints = typing.get_type_hints(GPTConfig)
    assert type_name(hints["positions"]) == "learned | rotary | alibi"
    assert type_name(hints["norm_placement"]) == "pre | post | peri | mix"


def test_every_settings_field_uses_known_bound_keys():
    # A misspelt bound ("minimum") would silently check nothing.
    for cls in settings_classes():
        for f in dataclasses.fields(cls):
            extra = set(f.metadata) - {"help", "format"} - BOUND_KEYS
            assert not extra, f"{cls.__qualname__}.{f.name}: unknown metadata {sorted(extra)}"


def test_load_toml_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[a\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(broken)
