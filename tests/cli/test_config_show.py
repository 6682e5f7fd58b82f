"""`seqlm config show` and `seqlm adapters` as a user runs them."""

from __future__ import annotations

import dataclasses
import json

from cli_helpers import run_seqlm

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
    bad = run_seqlm("config", "show", "--preset", "huge")
    assert bad.returncode == 2 and "no model preset named 'huge'" in bad.stderr


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
        result = run_seqlm(command, "--help")
        assert "seqlm config show" in " ".join(result.stdout.split())
