"""The import rules of DESIGN.md, checked on the source (import-linter checks them too).

`protocol`, `model`, `engine` and `agent` must run with the standard library alone (the
agent ships into guests as one zipapp, with the protocol inside); only `controller` may
import kopf; no module imports itself through others (no import circles), counting the
imports under `if TYPE_CHECKING:` too: a module that needs another's type without
importing it depends on a narrow Protocol of its own instead.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from kits import sources

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "guestha"
STDLIB_ONLY = ("protocol", "model", "engine", "agent")


def imports(path: Path) -> set[str]:
    """Top-level names of every module that `path` imports (relative imports as guestha)."""
    return {"guestha" if name.startswith(".") else name for name in sources.imported(path)}


def modules(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


@pytest.mark.parametrize("subpackage", STDLIB_ONLY)
def test_stdlib_only(subpackage: str) -> None:
    allowed = tuple(f"guestha.{p}" for p in STDLIB_ONLY)
    bad = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in modules(subpackage)
        for name in imports(path)
        if name.split(".")[0] not in sys.stdlib_module_names
        and not (name == "guestha" or name.startswith(allowed))
    }
    assert not bad, f"non-standard-library imports in guestha.{subpackage}: {sorted(bad)}"


def test_only_controller_imports_kopf() -> None:
    bad = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "kopf" in {n.split(".")[0] for n in imports(path)}
        and path.relative_to(PACKAGE).parts[0] != "controller"
    ]
    assert not bad, f"kopf imported outside guestha.controller: {bad}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root.name, *parts])


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the package at `root` it imports (every import statement,
    wherever it is: inside functions and `if TYPE_CHECKING:` too)."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                           for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circles() -> None:
    graph = import_graph(PACKAGE)
    assert "guestha.agent.api" in graph and "guestha.protocol.status" in graph
    assert "guestha.protocol.status" in graph["guestha.agent.api"]  # it sees imports
    assert not circles(graph), f"import circles: {circles(graph)}"


def test_the_circle_finder_counts_type_checking_imports(tmp_path: Path) -> None:
    """The finder itself must catch what it is for, including a circle that only
    `if TYPE_CHECKING:` closes and one through a relative import."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from typing import TYPE_CHECKING\n"
                               "if TYPE_CHECKING:\n    from pkg.b import B\n")
    (root / "b.py").write_text("from . import a\n")
    (root / "c.py").write_text("import pkg.a\n")
    (root / "sub" / "d.py").write_text("from ..c import x\nfrom .e import y\n")
    (root / "sub" / "e.py").write_text("def f():\n    from pkg.sub import d\n")
    assert circles(import_graph(root)) == [["pkg.a", "pkg.b"], ["pkg.sub.d", "pkg.sub.e"]]


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself must catch what it is for."""
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nfrom kopf import on\nfrom . import x\n")
    assert imports(sample) == {"json", "kopf", "guestha"}
