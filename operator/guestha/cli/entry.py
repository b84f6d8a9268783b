"""kubectl-guestha's console script: says what to install when the API client is missing.

The `kubernetes` client is the CLI's optional dependency (`pip install 'guestha[cli]'`):
the operator, which shares the package, goes without it. Without this check, a plain
`pip install guestha` would give a kubectl-guestha that dies with an import traceback.
"""

from __future__ import annotations

import sys

MISSING = ("kubectl-guestha needs the Python package kubernetes: "
           "pip install 'guestha[cli]' (or pip install kubernetes)")


def main() -> int:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        sys.exit(MISSING)
    from guestha.cli.main import main as run
    return run()
