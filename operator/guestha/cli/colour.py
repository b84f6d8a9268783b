"""When kubectl-guestha colours its output, and how: only text meant for a person.

Colour is for a terminal: never when the output is piped or redirected (a script reads
it), never with `-o json|yaml` (machine-readable stays plain), and never when NO_COLOR is
set to anything non-empty (the no-color.org convention). Pure, so the rule is tested as a
table.
"""

from __future__ import annotations

from collections.abc import Mapping

RESET = "\x1b[0m"
GREEN, YELLOW, RED = "\x1b[32m", "\x1b[33m", "\x1b[31m"

# State words as the CRDs spell them (ServiceGroup state, member phase, Switchover phase,
# condition status); anything else stays uncoloured.
STATE_COLOURS = {
    "Online": GREEN, "Running": GREEN, "Succeeded": GREEN, "True": GREEN, "true": GREEN,
    "Partial": YELLOW, "Starting": YELLOW, "Stopping": YELLOW, "Switching": YELLOW,
    "Pending": YELLOW, "Unknown": YELLOW, "Scheduling": YELLOW, "Scheduled": YELLOW,
    "Faulted": RED, "Failed": RED, "False": RED, "false": RED,
}


def wanted(is_terminal: bool, environ: Mapping[str, str], output: str | None) -> bool:
    """Colour only for a terminal, without NO_COLOR, in text output (`output` None)."""
    return is_terminal and not environ.get("NO_COLOR") and output is None


def paint(word: str, on: bool) -> str:
    """`word` in its state's colour when `on`; as it is otherwise."""
    colour = STATE_COLOURS.get(word)
    return f"{colour}{word}{RESET}" if on and colour else word
