"""Build Prometheus's promtool from its Go module, cached by version.

The monitoring manifests' alert rules are checked by the tool Prometheus itself ships
(`promtool check rules`, `promtool test rules`), not by a parser of our own: a rule that
promtool accepts is one Prometheus loads. The Prometheus module has no replace directives,
so `go install` builds it as it is; the binary lands in the cache beside the control
plane's (`~/.cache/guestha/promtool-<version>/bin/promtool`) and a second run finds it.
(A module of its own: hack/testbed/build.py builds the control plane and helm.)
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from testbed import build

# Prometheus 3.x publishes its Go module as v0.3MM.P (3.MM.P); this one's go.mod asks for
# Go 1.26.7, within the Go 1.26 the project builds with.
PROMETHEUS_VERSION = "v0.316.0"


def promtool_dir() -> Path:
    return build.cache_root() / f"promtool-{PROMETHEUS_VERSION}"


def binary() -> Path:
    return promtool_dir() / "bin" / "promtool"


def build_promtool() -> Path:
    """promtool, built once per version (under the cache's build lock, as the rest)."""
    if binary().exists():
        return binary()
    build.cache_root().mkdir(parents=True, exist_ok=True)
    with open(build.cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary().exists():
            return binary()
        if shutil.which("go") is None:
            raise SystemExit("go is not on PATH: promtool is built from its Go module")
        out = binary().parent
        out.mkdir(parents=True, exist_ok=True)
        staging = out / "staging"
        env = dict(os.environ, GOBIN=str(staging), CGO_ENABLED="0",
                   GOFLAGS="-mod=mod -buildvcs=false")
        package = f"github.com/prometheus/prometheus/cmd/promtool@{PROMETHEUS_VERSION}"
        print(f"+ go install {package}", file=sys.stderr, flush=True)
        subprocess.run(["go", "install", "-trimpath", "-ldflags=-s -w", package],
                       env=env, check=True)
        (staging / "promtool").rename(binary())  # complete or absent, never half-written
        staging.rmdir()
    return binary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(build_promtool())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
