"""The agent bundle: reproducible bytes, a content-hash version, and a zipapp that runs
(and imports every agent module) under the oldest Python guests have, 3.9."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from guestha.agent.version import agent_version
from guestha.cloudinit import bundle
from kits.interpreters import python39

pytestmark = pytest.mark.unit


def copy_sources(to: Path) -> Path:
    target = to / "agent"
    shutil.copytree(bundle.agent_dir(), target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_same_sources_same_bytes(tmp_path: Path) -> None:
    first, second = bundle.build(), bundle.build()
    assert first.data == second.data and first.version == second.version
    # A copy made elsewhere, with other times, modes and a cache folder: still the same.
    copy = copy_sources(tmp_path)
    for path in copy.rglob("*.py"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
        path.chmod(0o600)
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"junk")
    (copy / "notes.txt").write_text("not a source")
    assert bundle.build(source=copy).data == first.data


def test_the_version_is_a_content_hash(tmp_path: Path) -> None:
    original = bundle.build()
    assert original.version == agent_version()  # what an agent from sources reports
    copy = copy_sources(tmp_path)
    with open(copy / "events.py", "a") as f:
        f.write("\n# a change\n")
    changed = bundle.build(source=copy)
    assert changed.version != original.version and changed.data != original.data
    assert len(original.version) == 16 and int(original.version, 16) >= 0


def test_entries_are_sorted_fixed_and_clean(tmp_path: Path) -> None:
    built = bundle.build()
    path = tmp_path / "agent.pyz"
    built.write(path)
    assert path.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names) == list(built.files)
        assert "__main__.py" in names and "guestha/agent/main.py" in names
        assert archive.read("guestha/agent/VERSION").decode().strip() == built.version
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert "__pycache__" not in info.filename and not info.filename.endswith(".pyc")
            assert not info.extra
        assert archive.testzip() is None


def test_bundle_imports_only_stdlib_and_the_agent() -> None:
    tree = ast.parse(Path(bundle.__file__).read_text())
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert (name.split(".")[0] in sys.stdlib_module_names or name == "guestha.agent"
                    or name.startswith("guestha.agent.") or name == "__future__"), name


@pytest.mark.parametrize("interpreter", ["current", "3.9"])
def test_the_zipapp_runs_and_imports_every_module(tmp_path: Path, interpreter: str) -> None:
    python = sys.executable if interpreter == "current" else python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here")
    built = bundle.build()
    path = tmp_path / "agent.pyz"
    built.write(path)
    run = subprocess.run([python, str(path), "--help"], capture_output=True, text=True,
                         timeout=60, env={"PATH": os.environ.get("PATH", "")})
    assert run.returncode == 0, run.stderr
    assert "--config" in run.stdout
    modules = [n[:-3].replace("/", ".").removesuffix(".__init__") for n in built.files
               if n.endswith(".py") and n.startswith("guestha/agent/")
               and not n.endswith("__main__.py")]
    check = ("import importlib, sys\n"
             f"sys.path.insert(0, {str(path)!r})\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "from guestha.agent.version import agent_version\n"
             "print(sys.version_info[:2], agent_version())\n")
    run = subprocess.run([python, "-I", "-c", check], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == built.version
    if interpreter == "3.9":
        assert "(3, 9)" in run.stdout


def test_a_missing_agent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no guestha agent sources"):
        bundle.build(source=tmp_path)
