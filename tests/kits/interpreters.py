"""Which Python runs the agent in tests: the oldest the guests have where one is here.

The agent must run on Python 3.9 (RHEL 9, SLES 15 SP5); hack/test sets GUESTHA_AGENT_PYTHON
to a 3.9 interpreter when the machine has one, and agent processes and guests use it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys


def agent_python() -> str:
    """The interpreter agents run with: GUESTHA_AGENT_PYTHON, else this test's own."""
    return os.environ.get("GUESTHA_AGENT_PYTHON", sys.executable)


def python39() -> str | None:
    """A working Python 3.9, the oldest guests have (pyenv's shims may not run one)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")))
    candidates += [c for c in [shutil.which("python3.9")] if c]
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None
