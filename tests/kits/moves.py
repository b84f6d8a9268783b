"""The operator's log line for each move of a Failover group (controller.publisher), read
back: which group moved from where to where and why, and the monotonic times of its steps.

The failover benchmark splits its trials with it and the publisher's unit test reads its
own line through it, so the two cannot drift apart unseen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE = re.compile(r"moved (?P<group>\S+) from (?P<origin>\S+) to (?P<to>\S+) "
                  r"\((?P<cause>\w+)\): noticed=(?P<noticed>[\d.]+) "
                  r"planned=(?P<planned>[\d.]+) confirmed=(?P<confirmed>[\d.]+) "
                  r"endpoints=(?P<endpoints>[\d.]+)")


@dataclass(frozen=True)
class Move:
    """One move. Times are the operator's time.monotonic() (the host's CLOCK_MONOTONIC):
    `noticed` the pass that found the group gone from home, `planned` the first plan
    onlining it elsewhere, `confirmed` the pass that found it Online there, `endpoints`
    that pass's writes (the EndpointSlice's among them) done."""

    group: str
    origin: str
    to: str
    cause: str  # ResourceFaulted, MemberLost or Switchover
    noticed: float
    planned: float
    confirmed: float
    endpoints: float


def moves(text: str) -> list[Move]:
    """Every move logged in `text` (a log's lines), in order."""
    return [Move(m["group"], m["origin"], m["to"], m["cause"], float(m["noticed"]),
                 float(m["planned"]), float(m["confirmed"]), float(m["endpoints"]))
            for m in LINE.finditer(text)]
