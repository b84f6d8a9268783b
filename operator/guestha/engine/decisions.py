"""A group's overall state for its status, from the reports and this plan.

Precedence (the first that holds): Switching (a Switchover runs); Starting (this plan
onlines it, or an agent reports Starting); Online / Partial (an agent reports it so and
this plan does not take it offline there: Online when any member is Online); Stopping
(an agent reports Stopping, or this plan offlines it); Faulted (an agent reports it
Faulted); Unknown (an agent reports Unknown, a member that could run it is silent and not
confirmed down, so it may run there, or no agent of its systems answers); Offline. A
member whose agent does not answer the operator but whose peers hear it counts with its
last report (Snapshot.seen): the operator's link to it is in trouble, not the member; so
does a migrating member (live-migrating, or restarting its agent for an upgrade) until
its silence makes it lost: nothing moved.
These are the ServiceGroup's status.state words ("Switching" is the operator's own).
"""

from __future__ import annotations

from guestha.engine.dependencies import Placed
from guestha.engine.plan import GroupDecision
from guestha.engine.snapshot import Snapshot
from guestha.engine.state import GroupState
from guestha.protocol.states import (
    FAULTED,
    OFFLINE,
    ONLINE,
    PARTIAL,
    STARTING,
    STOPPING,
    UNKNOWN,
)

SWITCHING = "Switching"


def overall(snap: Snapshot, placed: Placed, g: GroupState, switching: bool) -> str:
    reports = {m: snap.seen(g.name, m) for m in snap.members}
    offlined = placed.offlines(g.name)
    states = set(reports.values())
    if switching:
        return SWITCHING
    if placed.onlines(g.name) or STARTING in states:
        return STARTING
    up = {reports[m] for m in reports if reports[m] in (ONLINE, PARTIAL) and m not in offlined}
    if up:
        return ONLINE if ONLINE in up else PARTIAL
    if STOPPING in states or offlined:
        return STOPPING
    if FAULTED in states:
        return FAULTED
    silent = [m for m in snap.could_run(g) if not snap.members[m].agent_reachable
              and m not in snap.down]
    if UNKNOWN in states or silent or all(reports.get(m) is None for m in g.members):
        return UNKNOWN
    return OFFLINE


def decide(snap: Snapshot, placed: Placed, g: GroupState, switching: bool, target: str | None,
           reason: str, message: str) -> GroupDecision:
    return GroupDecision(overall(snap, placed, g, switching), snap.online_on(g.name), target,
                         reason, message)
