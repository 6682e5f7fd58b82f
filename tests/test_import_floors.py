"""The import graph of seqlm runs one way: from the top floors down to the ground floor.

Every module's imports are read with `ast` (module-level, function-level, `TYPE_CHECKING`
blocks, and `importlib.import_module("seqlm....")` with a literal name), so a loop that
only shows at run time, through a registry, is still caught.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.shared_data import REPO_ROOT

PACKAGE = REPO_ROOT / "seqlm"

# The ground floor: the shared vocabulary of the project. These modules import nothing
# of seqlm but each other.
GROUND_FLOOR = frozenset(
    {
        "seqlm.errors",
        "seqlm.events",
        "seqlm.config",
        "seqlm.constants",  # IGNORE_INDEX, TOKENIZER_FILE
    }
)

# The floors of docs/architecture.md, bottom first: a package (or top-level module) may
# import its own floor only on the ground floor, and otherwise only floors below it.
FLOORS: tuple[frozenset[str], ...] = tuple(
    frozenset(f"seqlm.{name}" for name in floor.split())
    for floor in (
        "errors events config constants progress durations plotting outputs artefacts",
        "vocabularies kernels",
        "corpora_adapters model",
        "corpus datasets",
        "training ingest",
        "export",
        "evaluation",
        "analysis",
        "tasks settings_help",
        "studies",
        "cli",
        "__main__ train",  # entry points: `python -m seqlm`, torchrun's seqlm.train
    )
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def seqlm_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve_relative(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(path: Path) -> Iterator[str]:
    """Every `seqlm...` name the module imports, wherever the import statement is.

    A module that calls `import_module` with a name it computes (a registry looping over
    a tuple of module names) is taken to import every module named by a string in it."""
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if any(_calls_import_module(node) for node in ast.walk(tree)):
        yield from (
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("seqlm.")
        )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                target = _resolve_relative(module, node, path.name == "__init__.py")
            # `from seqlm.x import y` may import the submodule seqlm.x.y
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)
        elif _is_import_module_call(node):
            yield node.args[0].value


def _calls_import_module(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "import_module"


def _is_import_module_call(node: ast.AST) -> bool:
    first = node.args[0] if _calls_import_module(node) else None
    return (
        isinstance(first, ast.Constant)
        and isinstance(first.value, str)
        and first.value.startswith("seqlm")
    )


def dependencies(path: Path, modules: dict[str, Path]) -> set[str]:
    """The seqlm modules that `path` imports (names that are not modules, such as a
    class imported from a module, are dropped)."""
    return {name for name in imported_names(path) if name in modules} - {module_name(path)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = seqlm_modules()
    return {name: dependencies(path, modules) for name, path in modules.items()}


def _importers_of(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(
        f"{module} -> {dep}"
        for module, deps in graph.items()
        if module == source or module.startswith(source + ".")
        for dep in deps
        if dep == target or dep.startswith(target + ".")
    )


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    # A check that finds nothing because it read nothing would pass forever.
    assert "seqlm.events" in graph and "seqlm.config" in graph
    assert "seqlm.events" in graph["seqlm.vocabularies.event_tokens"]
    assert "seqlm.config" in graph["seqlm.training.config"]
    # importlib strings count: the adapter registry imports its adapters that way.
    assert "seqlm.corpora_adapters.meds" in graph["seqlm.corpora_adapters"]


def test_ground_floor_imports_nothing_above_it(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{module} -> {dep}"
        for module in GROUND_FLOOR & graph.keys()
        for dep in graph[module]
        if dep not in GROUND_FLOOR and dep != "seqlm"
    )
    assert upward == []


def test_vocabularies_do_not_import_adapters(graph: dict[str, set[str]]) -> None:
    assert _importers_of(graph, "seqlm.vocabularies", "seqlm.corpora_adapters") == []


def test_kernels_do_not_import_the_model(graph: dict[str, set[str]]) -> None:
    assert _importers_of(graph, "seqlm.kernels", "seqlm.model") == []


def _package(module: str) -> str:
    """The unit of the package-level graph: `seqlm.training.efficient.x` ->
    `seqlm.training`; top-level modules stand for themselves."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in the graph of packages (each a list of package names, first = last)."""
    edges: dict[str, set[str]] = {}
    for module, deps in graph.items():
        source = _package(module)
        if source == "seqlm":  # the package's own __init__ re-exports its parts
            continue
        edges.setdefault(source, set()).update(
            _package(d) for d in deps if _package(d) not in (source, "seqlm")
        )
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def test_no_cycles_between_packages(graph: dict[str, set[str]]) -> None:
    assert package_cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"seqlm.a.x": {"seqlm.b.y"}, "seqlm.b.y": {"seqlm.a.z"}, "seqlm.a.z": set()}
    assert package_cycles(graph) == [["seqlm.a", "seqlm.b", "seqlm.a"]]


def floor_of(package: str) -> int:
    for number, floor in enumerate(FLOORS):
        if package in floor:
            return number
    raise AssertionError(f"{package} has no floor: add it to FLOORS and docs/architecture.md")


def test_imports_run_down_the_floors(graph: dict[str, set[str]]) -> None:
    """No import to a higher floor, and none between two packages of one floor above the
    ground floor: the floors of docs/architecture.md are the import order."""
    wrong = sorted(
        f"{module} (floor {floor_of(_package(module))}) -> {dep} (floor {floor_of(_package(dep))})"
        for module, deps in graph.items()
        if _package(module) != "seqlm"
        for dep in deps
        if _package(dep) not in ("seqlm", _package(module))
        and (
            floor_of(_package(dep)) > floor_of(_package(module))
            or (floor_of(_package(dep)) == floor_of(_package(module)) != 0)
        )
    )
    assert wrong == []


def test_every_module_has_no_cycle_either(graph: dict[str, set[str]]) -> None:
    """Module-level cycles (inside one package too, type-only imports included)."""
    modules = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(modules[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(modules):
        if node not in state:
            visit(node, [node])
    assert cycles == []
