"""Every settings field says what it means; the rows `seqlm config show` prints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from seqlm.corpora_adapters.birdsong.bouts import TimedOptions
from seqlm.corpora_adapters.meds_cohort import CohortOptions
from seqlm.model.config import GPTConfig
from seqlm.settings_help import (
    describe,
    field_help,
    missing_help,
    settings_classes,
    table_rows,
    type_name,
)
from seqlm.training.config import TrainConfig


def test_every_settings_field_has_a_help_text() -> None:
    # A field added without metadata={"help": ...} fails here, naming it.
    assert missing_help() == []


def test_registry_covers_tables_adapters_and_nested_tables() -> None:
    classes = settings_classes()
    assert GPTConfig in classes and TrainConfig in classes
    assert TimedOptions.__mro__[0] in classes or any(issubclass(c, TimedOptions) for c in classes)
    assert CohortOptions in classes  # nested in the MEDS options


def test_a_field_without_help_is_reported() -> None:
    @dataclass
    class Bare:
        said: int = field(default=1, metadata={"help": "One."})
        silent: int = 2

    helps = {f.name: field_help(f) for f in dataclasses.fields(Bare)}
    assert helps == {"said": "One.", "silent": None}


def test_rows_show_preset_defaults_and_types() -> None:
    rows = {row.key: row for row in table_rows("model", "small")}
    assert rows["n_layer"].default == "8" and rows["n_embd"].default == "512"
    assert rows["vocab_size"].default == "(from the corpus)"
    assert rows["layer_spans"].type == "list of (int | null) | null"
    train = {row.key: row for row in describe(TrainConfig)}
    assert train["decay"].type == "cosine | linear" and train["decay"].default == '"cosine"'
    assert type_name(bool | None) == "bool | null"
