"""The exit codes of kubectl-guestha, one definition each: scripts branch on them, so they
are part of the plugin's interface (listed in `--help` and docs/cli.md) and never reused.

argparse already exits with 2 on a usage error; the rest follow from what the verb found.
"""

from __future__ import annotations

OK = 0  # done: the change was made, or the switchover Succeeded
API_ERROR = 1  # the API refused or failed (a missing object included), or no kubeconfig
USAGE = 2  # bad command line (argparse's own code)
SWITCHOVER_FAILED = 3  # switch --wait: the Switchover ended Failed
TIMEOUT = 4  # switch --wait: no final phase before --timeout

HELP = """exit codes:
  0  done (switch --wait: the Switchover Succeeded)
  1  API error: the object does not exist, access denied, no cluster reachable
  2  usage error
  3  switch --wait: the Switchover Failed
  4  switch --wait: still not finished at --timeout"""
