"""`kubectl guestha switch --wait`: following a Switchover until it ends.

The rule is pure (`step`: the phase printed last and the Switchover's body in, a progress
line and maybe an exit code out), so it is tested as a table. `follow` reads the changes
from a watch, not by polling: the operator may write Running and Succeeded within a few
hundred milliseconds, and a poll would skip the phase in between. It keeps time against
one deadline: each watch is opened for the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from guestha.cli import exitcodes


@dataclass(frozen=True)
class Step:
    phase: str  # the phase now ("Pending" while the operator has not written one)
    line: str | None  # progress to print: only when the phase changed
    exit_code: int | None  # set once the Switchover is final


def step(printed: str | None, body: Mapping[str, Any]) -> Step:
    """What a fresh read of the Switchover means, given the phase printed last."""
    status = body.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    if phase == printed:
        return Step(phase, None, None)
    where = " ".join(f"{k} {status[k]}" for k in ("from", "to") if status.get(k))
    detail = "; ".join(x for x in (where, status.get("reason"), status.get("message")) if x)
    line = f"{phase}" + (f": {detail}" if detail else "")
    code = {"Succeeded": exitcodes.OK, "Failed": exitcodes.SWITCHOVER_FAILED}.get(phase)
    return Step(phase, line, code)


def follow(changes: Callable[[float], Iterable[Mapping[str, Any]]],
           say: Callable[[str], None], timeout: float,
           clock: Callable[[], float] = time.monotonic) -> int:
    """Follow the Switchover until it is final or `timeout` seconds passed; print each
    phase change through `say`; return the exit code (exitcodes.TIMEOUT at the deadline).

    `changes(seconds)` yields the Switchover as it is now, then each new version of it,
    and ends after about `seconds` (a watch the server closes then); it is asked again
    while time is left, so a watch that ends early loses nothing."""
    deadline = clock() + timeout
    printed: str | None = None
    while True:
        left = deadline - clock()
        if left <= 0:
            say(f"timed out after {timeout:g}s, still {printed or 'Pending'}")
            return exitcodes.TIMEOUT
        for body in changes(left):
            now = step(printed, body)
            if now.line is not None:
                say(now.line)
                printed = now.phase
            if now.exit_code is not None:
                return now.exit_code
            if clock() >= deadline:
                break
