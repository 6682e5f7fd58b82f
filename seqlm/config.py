"""One settings system: typed dataclasses filled from TOML, `key=value` strings or mappings.

Every settings table (`[model]`, `[train]`, `[scheme]`, `[splits]`, each adapter's
options) is a dataclass. Each field has a type (`int`, `float`, `bool`, `str`, `Path`,
`Literal[...]`, `X | None`, `list[X]`, a nested settings dataclass) and
`metadata={"help": ...}`, optionally with bounds: `"min"`/`"max"` (inclusive) and
`"above"`/`"below"` (exclusive).

- `parse_option_strings` and `load_toml` read what the user wrote (TOML literals, never
  evaluated code);
- `options_from_mapping` coerces those values to the field types (text such as `"4"` or
  `"true"` is accepted where a number or a flag is expected) and builds the dataclass;
- `check_fields`, called from a settings class's `__post_init__`, checks an already
  built object strictly against the same types and bounds, so code that builds
  settings directly gets the same errors as a user's file.

Every error is one `ConfigError` line naming the key, the value and what is allowed:
`option 'train.lr' must be positive, got -1`; unknown keys get "did you mean".
This module is on the ground floor: it imports nothing of seqlm but `errors`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from seqlm.errors import ConfigError, did_you_mean

_SEQUENCES = (list, tuple, set, frozenset)
_TRUE_WORDS = ("true", "1", "yes")
_BOOL_WORDS = (*_TRUE_WORDS, "false", "0", "no")


def setting_error(key: str, allowed: str, value: Any) -> ConfigError:
    """The one error line: `option 'train.lr' must be positive, got -1`."""
    return ConfigError(f"option {key!r} must be {allowed}, got {value!r}")


# ---------------------------------------------------------------------------------------
# Reading what the user wrote.


def parse_option_strings(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are read as TOML literals, else as plain strings.

    `a.b=1` nests into {"a": {"b": 1}}. No code is evaluated.
    """
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"option {pair!r} is not of the form key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"option {pair!r} has an empty key")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        target = result
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"option {key!r} conflicts with an earlier option")
        target[parts[-1]] = value
    return result


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a one-line ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


# ---------------------------------------------------------------------------------------
# Coercion: one function for every field type. `strict` (used by `check_fields`) accepts
# only values already of the field's type; otherwise text is parsed as well.


def coerce(value: Any, annotation: Any, key: str, *, strict: bool = False) -> Any:
    """`value` as the type `annotation`, or a ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(annotation), key, strict)
    if origin in _SEQUENCES:
        return _coerce_sequence(value, origin, typing.get_args(annotation), key, strict)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise setting_error(key, "a table", value)
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise setting_error(key, f"one of {list(allowed)}", value)
        return value
    if dataclasses.is_dataclass(annotation):
        return _coerce_table(value, annotation, key, strict)
    scalar = _SCALARS.get(annotation)
    return value if scalar is None else scalar(value, key, strict)


def _coerce_union(value: Any, args: tuple[Any, ...], key: str, strict: bool) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg, key, strict=strict)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError("; ".join(errors))


def _coerce_sequence(
    value: Any, origin: type, args: tuple[Any, ...], key: str, strict: bool
) -> Any:
    if isinstance(value, list | tuple):
        items = list(value)
    elif strict:
        raise setting_error(key, "a list", value)
    elif isinstance(value, str):
        items = [v for v in value.split(",") if v]
    else:
        items = [value]
    inner = args[0] if args else Any
    coerced = [coerce(v, inner, key, strict=strict) for v in items]
    return origin(coerced) if origin is not list else coerced


def _coerce_table(value: Any, cls: type, key: str, strict: bool) -> Any:
    if isinstance(value, cls):
        if strict:  # the nested table's own fields, named under this key
            check_fields(value, prefix=f"{key}.")
        return value
    if strict or not isinstance(value, dict):
        raise setting_error(key, "a table", value)
    return options_from_mapping(cls, value, prefix=f"{key}.")


def _coerce_bool(value: Any, key: str, strict: bool) -> bool:
    if isinstance(value, bool):
        return value
    if not strict and isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return value.lower() in _TRUE_WORDS
    raise setting_error(key, "true or false", value)


def _coerce_int(value: Any, key: str, strict: bool) -> int:
    # bool is an int subclass in Python; `true` is never a count.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not strict and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise setting_error(key, "an integer", value)


def _coerce_float(value: Any, key: str, strict: bool) -> float:
    if isinstance(value, bool) or (strict and not isinstance(value, int | float)):
        raise setting_error(key, "a number", value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise setting_error(key, "a number", value) from None
    if strict and not math.isfinite(number):
        raise setting_error(key, "a finite number", value)
    return number


def _coerce_str(value: Any, key: str, strict: bool) -> str:
    if isinstance(value, str):
        return value
    if strict or isinstance(value, dict | list):
        raise setting_error(key, "a string", value)
    return str(value)


def _coerce_path(value: Any, key: str, strict: bool) -> Path:
    if isinstance(value, Path):
        return value
    if strict and not isinstance(value, str):
        raise setting_error(key, "a path", value)
    return Path(str(value))


def _coerce_any(value: Any, key: str, strict: bool) -> Any:
    return value


_SCALARS: dict[Any, Callable[[Any, str, bool], Any]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
    Path: _coerce_path,
    Any: _coerce_any,
}


# ---------------------------------------------------------------------------------------
# Bounds from field metadata.


def bounds_text(metadata: Mapping[str, Any]) -> str | None:
    """What the bounds allow, as the error says it: `in [0, 1)`, `positive`, `at least 1`."""
    low, high = metadata.get("min"), metadata.get("max")
    above, below = metadata.get("above"), metadata.get("below")
    if low is not None and (high is not None or below is not None):
        return f"in [{low}, {high}]" if high is not None else f"in [{low}, {below})"
    if above == 0 and high is None and below is None:
        return "positive"
    parts = []
    if low is not None:
        parts.append(f"at least {low}")
    if above is not None:
        parts.append(f"above {above}")
    if high is not None:
        parts.append(f"at most {high}")
    if below is not None:
        parts.append(f"below {below}")
    return " and ".join(parts) or None


def within_bounds(value: float, metadata: Mapping[str, Any]) -> bool:
    """Whether `value` satisfies the field's `min`/`max`/`above`/`below` bounds."""
    checks = (
        ("min", lambda bound: value >= bound),
        ("max", lambda bound: value <= bound),
        ("above", lambda bound: value > bound),
        ("below", lambda bound: value < bound),
    )
    return all(metadata.get(name) is None or ok(metadata[name]) for name, ok in checks)


def _check_bounds(value: Any, metadata: Mapping[str, Any], key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return  # None (an unset optional) and non-numbers have no bounds
    if not within_bounds(value, metadata):
        raise setting_error(key, bounds_text(metadata) or "within its bounds", value)


# ---------------------------------------------------------------------------------------
# Building and checking settings dataclasses.


def options_from_mapping(
    cls: type, mapping: Mapping[str, Any], prefix: str = "", hint: str = ""
) -> Any:
    """Build the settings dataclass `cls` from a mapping, checking names and types.

    `prefix` names the table in errors (`train.`); `hint` is appended to the
    unknown-key error (where to read the keys' meanings).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'options'} must be a table of options")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(prefix + u for u in unknown)}"
            f"{did_you_mean(unknown, known, prefix)}; "
            f"known: {', '.join(sorted(prefix + k for k in known))}{hint}"
        )
    required = [prefix + f.name for f in fields if _required(f) and f.name not in mapping]
    if required:
        raise ConfigError(f"missing required option(s): {', '.join(required)}")
    kwargs = {name: coerce(value, hints[name], prefix + name) for name, value in mapping.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid options: {err}") from err


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def check_fields(settings: Any, prefix: str = "") -> None:
    """Check every field of a built settings dataclass against its type and bounds.

    Called from `__post_init__`. Values are normalised in place the way the coercion
    would (an int given for a float field becomes a float, a tuple for a list a list),
    so an object built in code equals the one read from a file.
    """
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        key = prefix + f.name
        value = coerce(getattr(settings, f.name), hints[f.name], key, strict=True)
        _check_bounds(value, f.metadata, key)
        object.__setattr__(settings, f.name, value)
