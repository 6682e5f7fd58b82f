"""`seqlm config show` and `seqlm adapters` as a user runs them."""

from __future__ import annotations

import dataclasses
import json

from helpers.cli_helpers import run, run_seqlm

from seqlm.cli.help_docs import help_text
from seqlm.settings_help import table_classes


def test_config_show_lists_every_key_with_meaning() -> None:
    result = run_seqlm("config", "show", "--preset", "small", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    for table, cls in table_classes().items():
        rows = {row["key"]: row for row in shown[table]}
        assert set(rows) == {f.name for f in dataclasses.fields(cls)}
        assert all(row["help"] and row["type"] and row["default"] for row in rows.values())
    assert {r["key"]: r["default"] for r in shown["model"]}["n_layer"] == "8"


def test_config_show_text_names_where_to_set_and_aliases() -> None:
    result = run_seqlm("config", "show")
    assert result.returncode == 0, result.stderr
    assert "[scheme]  (seqlm ingest --option scheme.KEY=VALUE)" in result.stdout
    assert "layers = n_layer" in result.stdout
    assert "[UNK]" in result.stdout  # brackets in meanings survive


def test_config_show_unknown_preset(capsys):
    assert run(["config", "show", "--preset", "huge"]) == 2
    assert "no model preset named 'huge'" in capsys.readouterr().err


def test_adapters_explains_every_option() -> None:
    result = run_seqlm("adapters", "textgrid")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "drop_intro bool = false Drop the notes in intro_labels" in text
    assert "bout_gap_s float | null = 0.5 A silence longer than this" in text
    assert 'intro_labels list of str = ["i"]' in text
    meds = " ".join(run_seqlm("adapters", "meds").stdout.split())
    assert "[adapter.cohort] table:" in meds and "hours_before float = 0.0" in meds


def test_set_help_points_to_config_show() -> None:
    for command in ("train", "ingest"):
        assert "seqlm config show" in " ".join(help_text((command,)).split())
