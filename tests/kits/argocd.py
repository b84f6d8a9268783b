"""guestha's Argo CD health checks as tests run them: on gopher-lua, the Lua engine Argo
CD embeds, through hack/gotools/luahealth (built and cached by hack/testbed/build.py),
which runs a health.lua the way Argo CD's controller does (see its source).

`health` evaluates one object; `run_checks` runs the health_test.yaml cases of check
folders laid out as Argo CD keeps its own (health.lua, health_test.yaml, testdata/).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from testbed import build

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "argocd" / "resource_customizations" / "guestha.io"
KINDS = ("InGuestCluster", "ServiceGroup", "Switchover")


def runner() -> Path:
    return build.build_tool("luahealth")


def health(kind: str, obj: dict[str, Any], script: Path | None = None) -> dict[str, str]:
    """{"status", "message"} of `obj` by the kind's health.lua (or `script`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(obj, f)
        f.flush()
        result = subprocess.run(
            [str(runner()), "eval", str(script or CHECKS / kind / "health.lua"), f.name],
            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"luahealth eval failed: {result.stderr}")
    found: dict[str, str] = json.loads(result.stdout)
    return found


def run_checks(*folders: Path) -> subprocess.CompletedProcess[str]:
    """`luahealth test` over the folders: exit 0 when every case matches, 1 when one does
    not (each mismatch printed as FAIL with the expected and the actual health)."""
    return subprocess.run([str(runner()), "test", *map(str, folders)],
                          capture_output=True, text=True, timeout=120)
