"""krew and its manifest validator, built from krew's Go module (sigs.k8s.io/krew), pinned.

The plugin manifest (plugins/guestha.yaml) is checked by krew itself, not by a schema of
ours: `validate-krew-manifest` (krew's own structural validation, the check krew-index
runs on submitted manifests) and `krew install --manifest --archive` (a real install from
the archive hack/plugin-archive builds, sha256 verified by krew) in a scratch KREW_ROOT.
Both commands `go install` as they are (krew's go.mod has no replaces).

    python3 -m testbed.krew     builds them (if missing) and prints their paths
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testbed import cachedbuild

KREW_VERSION = "v0.4.3"
COMMANDS = ("krew", "validate-krew-manifest")


def binary(name: str) -> Path:
    """Where krew's `name` (one of COMMANDS) lives in the cache."""
    return cachedbuild.tool_dir("krew", KREW_VERSION) / "bin" / name


def _build() -> None:
    out = binary(COMMANDS[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    packages = [f"sigs.k8s.io/krew/cmd/{c}@{KREW_VERSION}" for c in COMMANDS]
    print(f"+ go install {' '.join(packages)}", file=sys.stderr, flush=True)
    subprocess.run(["go", "install", "-trimpath", "-ldflags=-s -w", *packages],
                   env=cachedbuild.go_env(GOBIN=str(out)), check=True)


def ensure() -> dict[str, Path]:
    """Both commands, built once."""
    for name in COMMANDS:
        cachedbuild.once(binary(name), _build)
    return {name: binary(name) for name in COMMANDS}


if __name__ == "__main__":
    for path in ensure().values():
        print(path)
