"""The house size limits on seqlm's own code: no module over 500 lines, no function over
80 lines (complexity <= 15 is ruff's C901, configured in pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.shared_data import REPO_ROOT

PACKAGE = REPO_ROOT / "seqlm"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return (
        path.relative_to(REPO_ROOT).as_posix()
        if path.is_relative_to(REPO_ROOT)
        else path.as_posix()
    )


def long_modules(files: list[Path], limit: int = MAX_MODULE_LINES) -> list[str]:
    """`path (N lines)` for every file longer than `limit` lines."""
    found = []
    for path in files:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{_name(path)} ({lines} lines)")
    return found


def long_functions(files: list[Path], limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """`path::qualified.name` -> lines, for every function or method over `limit` lines
    (from the `def` line, decorators excluded, to its last line)."""
    found: dict[str, int] = {}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for qualname, node in _functions(tree):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found[f"{_name(path)}::{qualname}"] = lines
    return found


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, ast.AST]]:
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                found.append((name, node))
            found += _functions(node, f"{name}.")
    return found


def test_the_package_is_read() -> None:
    files = source_files()
    assert len(files) > 100
    assert long_functions(files, limit=1)  # a check that reads nothing would pass


def test_no_module_over_500_lines() -> None:
    assert long_modules(source_files()) == []


def test_no_function_over_80_lines() -> None:
    found = long_functions(source_files())
    assert found == {}


def test_the_architecture_map_stays_a_map() -> None:
    """docs/architecture.md is the map (parts, contracts, floors, where things go), at
    most ~15 KB; per-module detail belongs in docstrings (issue 16)."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 15_000
    assert "## The floors" in text and (REPO_ROOT / "CONTRIBUTING.md").is_file()


def test_limits_catch_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    module = tmp_path / "long.py"
    module.write_text(
        f"class A:\n    def f(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"
    )
    assert long_functions([module]) == {f"{module.as_posix()}::A.f": MAX_FUNCTION_LINES + 1}
    assert long_modules([module], limit=10) == [f"{module.as_posix()} (82 lines)"]
