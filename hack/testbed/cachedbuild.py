"""One Go-built tool into guestha's cache, once: the conventions of build.py for tools that
other modules build (krew.py, dockercheck.py).

A tool lives in ~/.cache/guestha/<tool>-<version>/bin/ (XDG_CACHE_HOME honoured); a second
run finds it there. Builds take the cache's one build lock (`.build.lock`, as build.py's
do), so test sessions started side by side wait for each other instead of building the same
thing twice on a small machine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from testbed.build import cache_root

GO_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}


def tool_dir(tool: str, version: str) -> Path:
    return cache_root() / f"{tool}-{version}"


def go_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **GO_ENV, **extra}


def once(binary: Path, build: Callable[[], None]) -> Path:
    """`binary`, built by `build` under the cache's build lock when it is missing."""
    if binary.exists():
        return binary
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            if shutil.which("go") is None:
                raise SystemExit(f"go is not on PATH: {binary.name} is built from Go modules")
            build()
    return binary
