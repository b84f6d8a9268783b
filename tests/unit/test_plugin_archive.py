"""The krew archive of kubectl-guestha: the same bytes every time, the manifest pinning them,
and the launcher inside it working as krew installs it (its own file, nothing else on the
path but the user's Python packages)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
import yaml

from testbed import pluginarchive

pytestmark = pytest.mark.unit

MANIFEST = pluginarchive.ROOT / "plugins" / "guestha.yaml"


def test_the_archive_is_reproducible() -> None:
    assert pluginarchive.archive() == pluginarchive.archive()


def test_the_checked_in_manifest_pins_the_archive_the_script_builds() -> None:
    sha256 = hashlib.sha256(pluginarchive.archive()).hexdigest()
    assert MANIFEST.read_text() == pluginarchive.manifest_text(sha256), (
        "plugins/guestha.yaml is stale: run hack/plugin-archive")
    platforms = yaml.safe_load(MANIFEST.read_text())["spec"]["platforms"]
    assert [p["sha256"] for p in platforms] == [sha256]


def test_the_archive_holds_the_launcher_and_the_licence() -> None:
    with zipfile.ZipFile(BytesIO(pluginarchive.archive())) as z:
        assert sorted(z.namelist()) == ["LICENSE", "kubectl-guestha"]
        assert z.getinfo("kubectl-guestha").external_attr >> 16 == 0o100755
        launcher = z.read("kubectl-guestha")
    assert launcher.startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(BytesIO(launcher)) as app:
        names = set(app.namelist())
    assert {"__main__.py", "guestha/__init__.py", "guestha/cli/main.py"} <= names
    assert not any(n.startswith(("guestha/controller", "guestha/agent")) for n in names)


def test_the_launcher_runs_on_its_own(tmp_path: Path) -> None:
    launcher = tmp_path / "kubectl-guestha"
    launcher.write_bytes(pluginarchive.launcher())
    launcher.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(launcher), "--help"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "exit codes:" in out.stdout and "switch" in out.stdout
