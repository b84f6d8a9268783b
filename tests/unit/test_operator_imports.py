"""The operator process loads no Kubernetes client library (controller/nokube.py).

`kubernetes` (and the pydantic it is generated with) or pykube-ng (with requests) cost the
operator 17 MB or more of resident memory, for nothing it uses: its own client talks to
the apiserver, kopf logs in by itself. A fresh interpreter imports the operator's entry
module as `guestha-operator` does; the packages are installed here, so any import path
that still reaches them (kopf's optional ones included) loads them and fails this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
FORBIDDEN = ("kubernetes", "pydantic", "pykube", "requests")

PROBE = """
import json, sys
import guestha.controller.main
loaded = sorted({name.split(".")[0] for name, module in sys.modules.items()
                 if module is not None})
print(json.dumps(loaded))
"""


def test_the_operator_loads_no_kubernetes_client_library() -> None:
    env = {**os.environ, "PYTHONPATH": str(OPERATOR)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert "kopf" in loaded  # the probe did import the operator
    assert loaded.isdisjoint(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_the_packages_are_installed_so_the_test_can_fail() -> None:
    import importlib.util
    assert importlib.util.find_spec("kubernetes") is not None
    assert importlib.util.find_spec("pydantic") is not None
