"""Every command's help keeps every word, and docs/cli holds exactly that help."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from seqlm.cli.help_docs import (
    DOCS_DIR,
    SETTINGS_PAGE,
    command_paths,
    documented,
    help_text,
    settings_markdown,
    source_help_strings,
)

BRACKETED = re.compile(r"\[[^\[\]\n]+\]")
PATHS = command_paths()


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_help_keeps_bracketed_words_through_subprocess() -> None:
    # The words rich markup used to swallow ("TOML file: adapter options, or ,  and  tables.")
    result = subprocess.run(
        [sys.executable, "-m", "seqlm", "ingest", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[adapter], [scheme] and [splits] tables" in _flat(result.stdout)


def test_walk_finds_every_command() -> None:
    assert {("ingest",), ("adapters",), ("attention", "maps"), ("runs", "show")} <= set(PATHS)
    assert ("config", "show") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_help_shows_every_bracketed_word(path: tuple[str, ...]) -> None:
    shown = _flat(help_text(path))
    for written in source_help_strings(path):
        for word in BRACKETED.findall(_flat(written)):
            assert word in shown, f"seqlm {' '.join(path)} --help lost {word!r}"
    assert shown.count("[") == shown.count("]"), f"unbalanced brackets in {path}"


def test_docs_pages_are_the_current_help() -> None:
    pages = documented()
    missing = [" ".join(p) for p in PATHS if p not in pages]
    assert not missing, f"docs/cli has no section for: {missing}"
    stale = [" ".join(p) for p in PATHS if pages[p] != help_text(p)]
    assert not stale, f"docs/cli is stale for {stale}; run `python -m seqlm.cli.help_docs`"
    for path, body in pages.items():
        assert body.count("[") == body.count("]"), f"unbalanced brackets in docs for {path}"
        assert not re.search(r"\w ,|, ,|\(\s*\)", body), f"vanished words in docs for {path}"


def test_settings_page_is_current():
    page = (DOCS_DIR.parent / SETTINGS_PAGE).read_text(encoding="utf-8")
    assert page == settings_markdown(), "run `python -m seqlm.cli.help_docs`"
    assert "| `drop_intro` | bool | `false` |" in page
