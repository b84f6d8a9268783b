"""What a Python source file imports, read from its syntax tree: the layering and the
benchmark-direction tests both ask it, so there is one reader of imports."""

from __future__ import annotations

import ast
from pathlib import Path


def imported(path: Path) -> set[str]:
    """Every module name `path` imports, a relative import with its leading dots
    (`from . import x` is "."; `from .y import z` is ".y")."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names
