"""kubectl-guestha as a user runs it: its own process, this checkout's code (PYTHONPATH at
the tree under test, whatever guestha the interpreter has installed), output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"


def run(kubeconfig: Path, *args: str, env: Mapping[str, str] | None = None,
        timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """`kubectl guestha --kubeconfig KUBECONFIG ARGS...`; `env` replaces the environment
    (PYTHONPATH is set in either case)."""
    base = dict(os.environ if env is None else env)
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(OPERATOR_SRC),
                                                     base.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "guestha.cli.main", "--kubeconfig",
                           str(kubeconfig), *args], capture_output=True, text=True,
                          env=base, timeout=timeout)
