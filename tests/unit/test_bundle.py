"""The agent bundle: reproducible bytes, a content-hash version over the agent and the
protocol it carries, and a zipapp that runs on its own (and imports every agent and
protocol module) under the oldest Python guests have, 3.9."""

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
    """A copy of guestha's sources (every package, as the bundle is built from its root)."""
    target = to / "guestha"
    shutil.copytree(bundle.package_dir(), target,
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
    for package in ("agent", "protocol"):
        (copy / package / "__pycache__").mkdir(exist_ok=True)
        (copy / package / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"junk")
        (copy / package / "notes.txt").write_text("not a source")
    # The operator's packages are not the agent's: a change there changes nothing.
    with open(copy / "channel" / "client.py", "a") as f:
        f.write("\n# an operator-side change\n")
    assert bundle.build(source=copy).data == first.data


@pytest.mark.parametrize("changed_file", ["agent/events.py", "protocol/states.py"])
def test_the_version_is_a_content_hash(tmp_path: Path, changed_file: str) -> None:
    """A change to any file the agent runs, its own or the protocol's, is a new version."""
    original = bundle.build()
    assert original.version == agent_version()  # what an agent from sources reports
    copy = copy_sources(tmp_path)
    assert bundle.build(source=copy).version == original.version
    with open(copy / changed_file, "a") as f:
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
        assert "guestha/protocol/__init__.py" in names and "guestha/protocol/status.py" in names
        # Only the agent and the protocol: nothing of the operator's side.
        assert {n.split("/")[1] for n in names if n.count("/") > 1} == {"agent", "protocol"}
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


# Standard modules the agent does without, or imports only when it needs them (a removed
# group's files, an IP resource's arping, O_TMPFILE missing): each would stay in its memory
# for good (docs/agent-api.md, "The agent's memory").
KEPT_OUT = {"argparse", "datetime", "secrets", "random", "tempfile", "shutil", "bz2", "lzma",
            "pkgutil", "xml.etree.ElementTree", "pyexpat", "typing", "ipaddress",
            "urllib", "urllib.parse", "glob", "fnmatch"}
# Python 3.11's urllib.parse imports ipaddress itself (the agent no longer imports either).
LOADED_BY_311: set[str] = set()
# What the agent imports to start (its main module and the default group runner) and what
# it leaves for later: each resource type's module comes with the first resource of that
# type, the upload check (zipfile) with the first PUT /v1/bundle.
AT_START = ("guestha.agent.main", "guestha.agent.groups")
LATER = {"guestha.agent.resources.process", "guestha.agent.resources.application",
         "guestha.agent.resources.ocf", "guestha.agent.resources.systemd",
         "guestha.agent.resources.mount", "guestha.agent.resources.ip",
         "guestha.agent.resources.programs", "guestha.agent.resources.fsprobe",
         "guestha.agent.resources.pidfiles", "zipfile"}


@pytest.mark.parametrize("interpreter", ["current", "3.9"])
def test_the_zipapp_runs_and_imports_every_module(tmp_path: Path, interpreter: str) -> None:
    """Run in isolation (-I, outside the source tree, no PYTHONPATH): everything the agent
    needs, the protocol included, comes from the zipapp."""
    python = sys.executable if interpreter == "current" else python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here")
    built = bundle.build()
    path = tmp_path / "agent.pyz"
    built.write(path)
    env = {"PATH": os.environ.get("PATH", "")}
    run = subprocess.run([python, "-I", str(path), "--help"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "--config" in run.stdout and "/etc/guestha/agent.json" in run.stdout
    # The identity file is read by guestha.protocol.identity: a bad field is named, exit 2.
    identity = tmp_path / "agent.json"
    identity.write_text('{"cluster": "web", "member": "web-a", "port": 0}')
    run = subprocess.run([python, "-I", str(path), "--config", str(identity)],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "port must be a port number (1-65535), got 0" in run.stderr
    modules = [n[:-3].replace("/", ".").removesuffix(".__init__") for n in built.files
               if n.endswith(".py") and n.startswith(("guestha/agent/", "guestha/protocol/"))
               and not n.endswith("__main__.py")]
    assert "guestha.protocol.status" in modules and "guestha.agent.agent" in modules
    check = ("import importlib, sys\n"
             f"sys.path.insert(0, {str(path)!r})\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "import guestha.protocol\n"
             "assert guestha.protocol.__file__.startswith(sys.path[0]), guestha.protocol\n"
             "from guestha.agent.version import agent_version\n"
             f"kept_out = {sorted(KEPT_OUT)!r}\n"
             f"if sys.version_info >= (3, 11): kept_out = set(kept_out) - {LOADED_BY_311!r}\n"
             "print(sorted(set(sys.modules).intersection(kept_out)))\n"
             "print(sys.version_info[:2], agent_version())\n")
    # -S: what the interpreter's own site-packages (.pth files) import is not the agent's.
    run = subprocess.run([python, "-I", "-S", "-c", check], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "[]", "loaded with the agent: " + run.stdout
    assert run.stdout.split()[-1] == built.version
    if interpreter == "3.9":
        assert "(3, 9)" in run.stdout


@pytest.mark.parametrize("interpreter", ["current", "3.9"])
def test_the_agent_starts_without_what_it_loads_later(tmp_path: Path, interpreter: str) -> None:
    """An agent that has started (and runs no resource yet) holds none of LATER or
    KEPT_OUT: a module imported at start would stay in its memory for good."""
    python = sys.executable if interpreter == "current" else python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here")
    path = tmp_path / "agent.pyz"
    bundle.build().write(path)
    check = ("import importlib, sys\n"
             f"sys.path.insert(0, {str(path)!r})\n"
             f"for m in {AT_START!r}: importlib.import_module(m)\n"
             f"print(sorted(set(sys.modules).intersection({sorted(LATER | KEPT_OUT)!r})))\n"
             "import guestha.agent.resources as r\n"
             "assert r.resource_class('Mount') is r.Mount\n"
             "print('guestha.agent.resources.mount' in sys.modules)\n")
    run = subprocess.run([python, "-I", "-S", "-c", check], capture_output=True, text=True,
                         timeout=60, env={"PATH": os.environ.get("PATH", "")}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["[]", "True"], "loaded at start: " + run.stdout


def test_a_missing_agent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no guestha agent sources"):
        bundle.build(source=tmp_path)


def test_a_missing_protocol_is_a_clear_error(tmp_path: Path) -> None:
    copy = copy_sources(tmp_path)
    shutil.rmtree(copy / "protocol")
    with pytest.raises(FileNotFoundError, match="no guestha protocol sources"):
        bundle.build(source=copy)
