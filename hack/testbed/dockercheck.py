"""dockerfile-check: the Containerfile read by BuildKit's own Dockerfile parser.

There is no container engine on this machine (docker is only a client), so the image is
not built here; what can be checked honestly is that BuildKit, the builder of
`docker build` and `buildah`'s peer, parses the Containerfile, accepts every instruction,
and that the instruction-level rules of its linter (those `docker build --check` runs)
find nothing. The Go program in go-dockerfile-check/ (its go.mod and go.sum pin
github.com/moby/buildkit) prints that as JSON; tests read it.

    python3 -m testbed.dockercheck FILE     builds the tool (if missing) and runs it
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from testbed import cachedbuild

BUILDKIT_VERSION = "v0.34.2"  # also in go-dockerfile-check/go.mod; a test keeps them equal
SOURCE = Path(__file__).resolve().parent / "go-dockerfile-check"


def binary() -> Path:
    return cachedbuild.tool_dir("dockerfile-check", BUILDKIT_VERSION) / "bin" / \
        "dockerfile-check"


def _build() -> None:
    work = binary().parent.parent / "src"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(SOURCE, work)
    binary().parent.mkdir(parents=True, exist_ok=True)
    print(f"+ go build dockerfile-check (buildkit {BUILDKIT_VERSION})", file=sys.stderr,
          flush=True)
    # -mod=readonly: the checked-in go.sum is the pin; nothing is resolved anew
    subprocess.run(["go", "build", "-trimpath", "-mod=readonly", "-o", str(binary()), "."],
                   cwd=work, env=cachedbuild.go_env(GOFLAGS="-buildvcs=false"), check=True)


def ensure() -> Path:
    return cachedbuild.once(binary(), _build)


def check(path: Path) -> dict[str, Any]:
    """BuildKit's reading of the file at `path`: instructions, stages, warnings, lint.
    Raises CalledProcessError (with BuildKit's message) when it does not parse."""
    out = subprocess.run([str(ensure()), str(path)], capture_output=True, text=True,
                         check=True)
    return dict(json.loads(out.stdout))


if __name__ == "__main__":
    print(json.dumps(check(Path(sys.argv[1])), indent=2))
