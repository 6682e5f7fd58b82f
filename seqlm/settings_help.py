"""Every settings key a user can write, with its type, default and one-line meaning.

The meaning lives on the dataclass field itself (`field(..., metadata={"help": ...})`),
so `seqlm config show`, `seqlm adapters` and the docs read one source. The tables are
`[model]` and `[train]` (`seqlm train --set`), `[scheme]` and `[splits]` (`seqlm ingest
--option`), and each adapter's `[adapter]` options.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from seqlm.errors import ConfigError

TABLES = ("model", "train", "scheme", "splits")


@dataclass(frozen=True)
class SettingRow:
    """One key of a settings table as `seqlm config show` prints it."""

    key: str
    type: str
    default: str
    help: str


def table_classes() -> dict[str, type]:
    """The dataclass behind each settings table."""
    from seqlm.corpus.splits import SplitConfig
    from seqlm.model.config import GPTConfig
    from seqlm.training.config import TrainConfig
    from seqlm.vocabularies.scheme import TokenScheme

    return {"model": GPTConfig, "train": TrainConfig, "scheme": TokenScheme, "splits": SplitConfig}


def settings_classes() -> list[type]:
    """Every settings dataclass users write keys of: the tables, each adapter's options and
    the dataclasses nested in them (e.g. the MEDS `[adapter.cohort]` table)."""
    from seqlm.corpora_adapters import registered_adapters

    roots = list(table_classes().values())
    roots += [spec.options for spec in registered_adapters().values()]
    found: list[type] = []
    while roots:
        cls = roots.pop(0)
        if cls in found:
            continue
        found.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            roots += [t for t in _flatten(hints[f.name]) if dataclasses.is_dataclass(t)]
    return found


def nested_tables(cls: type) -> dict[str, type]:
    """The fields of `cls` that are tables of their own, by field name (MEDS `cohort`)."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        tables = [t for t in _flatten(hints[f.name]) if dataclasses.is_dataclass(t)]
        if tables:
            found[f.name] = tables[0]
    return found


def _flatten(hint: Any) -> list[Any]:
    args = typing.get_args(hint)
    if not args:
        return [hint]
    return [t for arg in args for t in _flatten(arg)]


def field_help(f: dataclasses.Field) -> str | None:
    """The field's one-line meaning, or None when it has none."""
    text = f.metadata.get("help") if f.metadata else None
    return text if isinstance(text, str) and text.strip() else None


def missing_help() -> list[str]:
    """`Class.field` for every settings field without a help text (should be empty)."""
    return [
        f"{cls.__module__}.{cls.__qualname__}.{f.name}"
        for cls in settings_classes()
        for f in dataclasses.fields(cls)
        if field_help(f) is None
    ]


def type_name(hint: Any) -> str:
    """A short, user-facing name of a type: `int | null`, `cosine | linear`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple):
        inner = type_name(args[0]) if args else "any"
        return f"list of ({inner})" if " | " in inner else f"list of {inner}"
    if origin is dict:
        return "table"
    if dataclasses.is_dataclass(hint):
        return "table"
    return getattr(hint, "__name__", str(hint))


def default_text(f: dataclasses.Field) -> str:
    """The field's default as the user would write it (TOML-ish), or `(required)`."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return _toml(value)


def _toml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A TOML literal string where a backslash would be an escape in a basic one.
        return f"'{value}'" if "\\" in value or '"' in value else f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def describe(cls: type, overrides: dict[str, Any] | None = None) -> list[SettingRow]:
    """One row per field of `cls`; `overrides` replace defaults (presets, adapters)."""
    hints = typing.get_type_hints(cls)
    overrides = overrides or {}
    rows = []
    for f in dataclasses.fields(cls):
        default = _toml(overrides[f.name]) if f.name in overrides else default_text(f)
        rows.append(SettingRow(f.name, type_name(hints[f.name]), default, field_help(f) or ""))
    return rows


def table_rows(table: str, preset: str | None = None) -> list[SettingRow]:
    """The keys of one settings table with the defaults a run or an ingest would use."""
    classes = table_classes()
    if table not in classes:
        raise ConfigError(f"no settings table {table!r}; tables: {', '.join(TABLES)}")
    rows = describe(classes[table], _table_defaults(table, preset))
    # The vocabulary size is required of a GPTConfig, but a run takes it from the corpus.
    return [
        dataclasses.replace(row, default="(from the corpus)") if row.key == "vocab_size" else row
        for row in rows
    ]


def _table_defaults(table: str, preset: str | None) -> dict[str, Any]:
    if table != "model":
        return {}
    from seqlm.model.config import PRESETS
    from seqlm.training.config import DEFAULT_CONTEXT, DEFAULT_PRESET

    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"no model preset named {name!r}; available: {', '.join(PRESETS)}")
    size = PRESETS[name]
    return {
        "n_layer": size.n_layer,
        "n_head": size.n_head,
        "n_embd": size.n_embd,
        "block_size": DEFAULT_CONTEXT,
        **size.extra,
    }


def aliases(table: str) -> dict[str, str]:
    """Friendly names accepted for the table's keys (`model.layers` -> `n_layer`)."""
    from seqlm.training.config import MODEL_ALIASES, TRAIN_ALIASES

    return {"model": MODEL_ALIASES, "train": TRAIN_ALIASES}.get(table, {})
