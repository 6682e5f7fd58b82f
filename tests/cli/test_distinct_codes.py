"""Issue 14 class 6: distinct inputs stay distinct.

Every source code becomes its own token, and the token maps back to exactly that code
(`token_info(t).code`); a collision that escaping cannot prevent (`use_text`) is a
one-line error naming both codes. Through the CLI, as a user runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers.data_cli import assert_one_line_error, seqlm, write_meds_rows

from seqlm.corpus import load_corpus

START = datetime(2100, 1, 1)


def _rows(codes: list[tuple[str, float | None, str | None]], subjects: int = 5) -> list[tuple]:
    """Each (code, value, text) once per subject, an hour apart."""
    rows = []
    for s in range(1, subjects + 1):
        for i, (code, value, text) in enumerate(codes):
            rows.append((s, START + timedelta(hours=i), code, value, text))
    return rows


def _ingest(tmp_path: Path, rows: list[tuple], *options: str):
    root = write_meds_rows(tmp_path / "meds", rows)
    out = tmp_path / "corpus"
    result = seqlm("ingest", "meds", root, "--out", out, *options)
    return result, out


def _codes_by_token(out: Path) -> dict[str, str]:
    vocab = load_corpus(out).vocabulary
    return {t: vocab.token_info(t).code for t in vocab.data_tokens}


@pytest.mark.parametrize(
    "codes",
    [
        ["a b", "a\tb", "a\nb", "a▁b"],  # the example
        ["x\x1cy", "x\x1dy", "x\x1ey", "x\x1fy", "x\x00y"],  # controls aborted ingest
        ["n\u00a0b", "n\u2028b", "n\u3000b", "n b"],  # Unicode whitespace
        ["p\\x09q", "p\tq", "p\\\\q", "p\\q"],  # literal escapes vs what they spell
        ["[PAD]", "[TIME//5m]", "VALUE//Q3", "LAB//[UNK]"],  # scheme look-alikes
    ],
)
def test_look_alike_codes_get_their_own_tokens(tmp_path: Path, codes: list[str]):
    result, out = _ingest(tmp_path, _rows([(c, None, None) for c in codes]))
    assert result.returncode == 0, result.stderr
    by_token = _codes_by_token(out)
    assert sorted(by_token.values()) == sorted(codes)  # one token per code, each back
    vocab = load_corpus(out).vocabulary
    assert len(vocab) == len(set(vocab.tokens))
    assert not any(c.isspace() for t in vocab.tokens for c in t)


def test_literal_bin_suffix_differs_from_a_value_bin(tmp_path: Path):
    # Code `A` with values (so bins Q1..Qk) beside a literal code `A//Q3`.
    rows = []
    for s in range(1, 6):
        for i in range(12):
            rows.append((s, START + timedelta(hours=i), "A", float(i), None))
        rows.append((s, START + timedelta(hours=20), "A//Q3", None, None))
    result, out = _ingest(tmp_path, rows)
    assert result.returncode == 0, result.stderr
    by_token = _codes_by_token(out)
    assert by_token["A//Q3"] == "A"  # a value bin of code A
    assert by_token["A//\\x513"] == "A//Q3"  # the literal code, escaped
    assert load_corpus(out).vocabulary.token_info("A//Q3").bin == 3


def test_code_and_text_collision_is_one_line_error_naming_both(tmp_path: Path):
    rows = _rows([("K//x", None, "y"), ("K//x//y", None, None)])
    result, _ = _ingest(tmp_path, rows, "-O", "scheme.use_text=true")
    line = assert_one_line_error(result, "'K//x' with text 'y'", "'K//x//y'")
    assert "use_text" in line


def test_tabular_codes_with_tabs_and_newlines_stay_apart(tmp_path: Path):
    source = tmp_path / "events.csv"
    codes = ['"a b"', '"a\tb"', '"a\nb"', '"a▁b"']
    lines = ["entity,time,code"]
    lines += [f"e{e},{i},{c}" for e in range(3) for i, c in enumerate(codes)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "corpus"
    mapping = ["-O", 'entity="entity"', "-O", 'time="time"', "-O", 'code="code"']
    result = seqlm("ingest", "tabular", source, "--out", out, *mapping)
    assert result.returncode == 0, result.stderr
    assert sorted(_codes_by_token(out).values()) == sorted(["a b", "a\tb", "a\nb", "a▁b"])
