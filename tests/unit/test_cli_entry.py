"""kubectl-guestha installed without its extra `cli` says what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(OPERATOR), "PATH": "/usr/bin:/bin"})


def test_without_the_kubernetes_client_it_names_the_package_to_install() -> None:
    # None in sys.modules makes `import kubernetes` fail, as on a machine without it
    out = run("import sys; sys.modules['kubernetes'] = None; sys.argv = ['kubectl-guestha', "
              "'status']; from guestha.cli.entry import main; main()")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip() == ("kubectl-guestha needs the Python package kubernetes: "
                                  "pip install 'guestha[cli]' (or pip install kubernetes)")


def test_with_it_the_cli_runs() -> None:
    out = run("import sys; sys.argv = ['kubectl-guestha', '--help']; "
              "from guestha.cli.entry import main; sys.exit(main())")
    assert out.returncode == 0, out.stderr
    assert "switch" in out.stdout
