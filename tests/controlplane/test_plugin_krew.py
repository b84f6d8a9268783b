"""kubectl-guestha as krew installs it: plugins/guestha.yaml validated by krew's own
validator, the archive hack/plugin-archive builds installed by krew itself (which checks
the sha256 the manifest pins), and the installed plugin talking to the apiserver.

krew and validate-krew-manifest come from krew's Go module (hack/testbed/krew.py); marked
controlplane, the tier that builds and caches Go tools and has an apiserver.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testbed import krew, pluginarchive

pytestmark = pytest.mark.controlplane

MANIFEST = pluginarchive.ROOT / "plugins" / "guestha.yaml"


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    return krew.ensure()


def test_krew_validates_the_manifest(tools: dict[str, Path]) -> None:
    out = subprocess.run([str(tools["validate-krew-manifest"]), "-manifest", str(MANIFEST),
                          "-skip-install"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "structural validation OK" in out.stderr


def test_krew_rejects_a_manifest_whose_sha256_does_not_match(
        tools: dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / pluginarchive.archive_name()
    archive.write_bytes(pluginarchive.archive() + b"\0")  # one byte more than pinned
    out = install(tools, tmp_path / "root", archive)
    assert out.returncode != 0
    assert "checksum" in (out.stdout + out.stderr).lower()


def install(tools: dict[str, Path], root: Path, archive: Path
            ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KREW_ROOT=str(root))
    return subprocess.run([str(tools["krew"]), "install", "--manifest", str(MANIFEST),
                           "--archive", str(archive)], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL)


def test_krew_installs_the_archive_and_the_plugin_talks_to_the_cluster(
        tools: dict[str, Path], tmp_path: Path, kube: Any) -> None:
    assert pluginarchive.main([str(tmp_path)]) == 0  # the script's own way (manifest kept)
    root = tmp_path / "krew"
    out = install(tools, root, tmp_path / pluginarchive.archive_name())
    assert out.returncode == 0, out.stderr
    plugin = root / "bin" / "kubectl-guestha"
    assert (root / "store" / "guestha" / f"v{pluginarchive.version()}" / "LICENSE").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run([str(plugin), "--kubeconfig", str(kube.kubeconfig), "status", "-A",
                          "-o", "json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert set(json.loads(ran.stdout)) == {"clusters", "groups", "faultedResources",
                                           "pendingSwitchovers"}
