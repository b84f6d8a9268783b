"""The import rules of DESIGN.md, checked on the source (import-linter checks them too).

`model`, `engine` and `agent` must run with the standard library alone (the agent ships
into guests as one zipapp); only `controller` may import kopf.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "guestha"
STDLIB_ONLY = ("protocol", "model", "engine", "agent")


def imports(path: Path) -> set[str]:
    """Top-level names of every module that `path` imports (relative imports as guestha)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("guestha" if node.level else (node.module or ""))
    return names


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


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself must catch what it is for."""
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nfrom kopf import on\nfrom . import x\n")
    assert imports(sample) == {"json", "kopf", "guestha"}
