"""The status a ServiceGroup should have, from the engine's decision and the agents' reports.

Pure, like cluster_status: the supervisor writes the result only when it differs from
what the object holds, so a settled group costs no API writes however often the engine
runs. Per-member entries come from the agents (what runs where), the group's state and
`onlineOn` from the engine (which also knows what is only being decided).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guestha.engine import GroupDecision
from guestha.model.conditions import set_condition
from guestha.protocol.states import FAULTED, ONLINE, PARTIAL, STARTING, STOPPING, UNKNOWN

READY, DEGRADED, FROZEN, PROGRESSING = "Ready", "Degraded", "Frozen", "Progressing"


@dataclass(frozen=True)
class ResourceSeen:
    name: str
    state: str
    restarts: int = 0
    message: str = ""


@dataclass(frozen=True)
class MemberSeen:
    """The group on one member, as its agent last reported it."""

    name: str
    state: str  # UNKNOWN when the agent does not answer or has not reported the group
    reachable: bool
    resources: Sequence[ResourceSeen] = field(default_factory=tuple)
    online_attempts: int = 0  # onlines here that ended Faulted (compare onlineRetryLimit)


def _member(seen: MemberSeen) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": seen.name, "state": seen.state,
                             "faulted": seen.state == FAULTED}
    if not seen.reachable:
        entry["message"] = "the member's agent does not answer; last reported state shown"
    if seen.online_attempts:
        entry["onlineAttempts"] = seen.online_attempts
    if seen.resources:
        entry["resources"] = [
            {"name": r.name, "state": r.state, "restarts": r.restarts,
             **({"message": r.message[:256]} if r.message else {})}
            for r in seen.resources]
    return entry


def build(old: Mapping[str, Any], generation: int, decision: GroupDecision | None,
          members: Sequence[MemberSeen], wanted_online: bool, frozen: bool, now: str,
          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The new status. `extra` carries what the supervisor keeps (failovers,
    lastFailover, lastClear) as it should be written."""
    state = decision.state if decision is not None else UNKNOWN
    online_on = list(decision.online_on) if decision is not None else []
    reason = decision.reason if decision is not None else "NoDecision"
    message = decision.message if decision is not None else "the operator has not planned yet"
    conditions = list(old.get("conditions") or ())
    ready = state == ONLINE if wanted_online else state in (ONLINE, "Offline")
    conditions = set_condition(
        conditions, READY, ready, state if ready else reason,
        f"online on {', '.join(online_on)}" if online_on else message, now, generation)
    faulted = [m.name for m in members if m.state == FAULTED]
    unknown = [m.name for m in members if m.state == UNKNOWN]
    degraded = bool(faulted or unknown or state in (PARTIAL, FAULTED))
    parts = []
    if faulted:
        parts.append(f"faulted on {', '.join(faulted)}")
    if unknown:
        parts.append(f"state unknown on {', '.join(unknown)}")
    conditions = set_condition(
        conditions, DEGRADED, degraded,
        "Faulted" if faulted else ("StateUnknown" if unknown else
                                   (state if degraded else "Healthy")),
        "; ".join(parts) or (message if degraded else "no fault"), now, generation)
    conditions = set_condition(
        conditions, FROZEN, frozen, "Frozen" if frozen else "NotFrozen",
        "spec.frozen: nothing is started, stopped or failed over; faults are still reported"
        if frozen else "the operator acts on the group", now, generation)
    moving = state in (STARTING, STOPPING, "Switching")
    conditions = set_condition(conditions, PROGRESSING, moving,
                               reason if moving else "Settled",
                               message if moving else "nothing is moving", now, generation)
    status: dict[str, Any] = {
        "observedGeneration": generation, "state": state, "onlineOn": online_on,
        "members": [_member(m) for m in members], "wantedOnline": wanted_online,
        "failovers": int(old.get("failovers") or 0), "conditions": conditions,
        "message": message,
    }
    for key in ("lastFailover", "lastClear"):
        if key in old:
            status[key] = old[key]
    status.update(extra or {})
    return status


def online_attempts(status: Mapping[str, Any]) -> dict[str, int]:
    """The online attempts per member as the status keeps them (for a new operator)."""
    found = {}
    for entry in status.get("members") or ():
        n = entry.get("onlineAttempts") if isinstance(entry, Mapping) else None
        if isinstance(n, int) and n > 0:
            found[str(entry.get("name"))] = n
    return found


def differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())
