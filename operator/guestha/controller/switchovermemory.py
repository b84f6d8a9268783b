"""A Switchover's phase as this operator last decided it, until the status read shows it.

The supervisor reads Switchovers from kopf's index, which can lag its own status writes
by a pass or more. A Switchover decided Running (its group taken offline at `from` for
it) read back as Pending: with the group already offline, the engine failed it
(GroupNotOnline, "not online anywhere") and AutoStart put the group back where it was.
The same flaw, a status read before the index caught up, had the publisher's failover
and fencing counts (publisher.GroupRecord, fencingtally.FencingTally); the cure is the
same: what this process decided stands until the status read shows it or a later phase.
Only the engine's input is overlaid: the status is written whenever the decision differs
from what was read, so a write that failed is made again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guestha.engine.plan import SwitchoverDecision

# Phases only move forward: Pending -> Running -> Succeeded | Failed
RANK = {"Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


def rank(phase: Any) -> int:
    return RANK.get(str(phase or "Pending"), 0)


@dataclass(frozen=True)
class Decided:
    uid: str
    phase: str
    from_member: str | None
    to: str | None


class SwitchoverMemory:
    """One cluster's Switchover decisions (see the module docstring)."""

    def __init__(self) -> None:
        self._decided: dict[str, Decided] = {}

    def decided(self, decisions: Mapping[str, SwitchoverDecision],
                bodies: Mapping[str, Mapping[str, Any]]) -> None:
        """The pass's decisions, as the publisher writes them."""
        for name, d in decisions.items():
            uid = str((bodies.get(name) or {}).get("metadata", {}).get("uid") or "")
            if uid:
                self._decided[name] = Decided(uid, d.phase, d.from_member, d.to)

    def overlay(self, switchovers: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
                bodies: Mapping[str, Mapping[str, Any]]
                ) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
        """The engine's input: each (name, spec, status) with the status this process
        decided when the one read is behind it. Forgets what the reads caught up with,
        and Switchovers gone (or replaced by another of the same name)."""
        out = []
        for name, spec, status in switchovers:
            d = self._decided.get(name)
            uid = str((bodies.get(name) or {}).get("metadata", {}).get("uid") or "")
            if d is None or d.uid != uid or rank(status.get("phase")) >= rank(d.phase):
                self._decided.pop(name, None)
                out.append((name, spec, status))
                continue
            ahead = {**status, "phase": d.phase}
            for key, value in (("from", d.from_member), ("to", d.to)):
                if value is not None:
                    ahead[key] = value
            out.append((name, spec, ahead))
        for name in set(self._decided) - {n for n, _, _ in switchovers}:
            del self._decided[name]
        return out
