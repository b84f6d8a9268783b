"""The status an InGuestCluster should have, built from what the operator observes.

Pure: views and the old status in, the new status out; the handler writes it only when it
differs, so an idle cluster costs no API writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guestha.model.conditions import set_condition
from guestha.model.members import MemberPhase, MemberView

AVAILABLE, DEGRADED, PROGRESSING = "Available", "Degraded", "Progressing"
AGENTS_UP_TO_DATE = "AgentsUpToDate"  # the agent rollout's (controller.rollout)
_STARTING = {MemberPhase.PENDING, MemberPhase.SCHEDULING, MemberPhase.SCHEDULED}


@dataclass(frozen=True)
class AgentSeen:
    """A member's agent as the operator's channel finds it."""

    connected: bool
    version: str | None = None


def _member(view: MemberView, old: Mapping[str, Any], agent: AgentSeen | None,
            now: str, run: Mapping[str, str] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": view.name, "phase": str(view.phase)}
    if view.address:
        entry["address"] = view.address
    if view.node:
        entry["node"] = view.node
    if run is not None:
        entry["run"] = dict(run)
    elif "run" in old:
        entry["run"] = old["run"]
    if view.phase is MemberPhase.MISSING:
        entry["message"] = "no VirtualMachine of this name in the cluster's namespace"
    elif view.phase is MemberPhase.STOPPED:
        entry["message"] = "the VirtualMachine has no running instance"
    if view.restart_required:
        entry["restartRequired"] = True
        entry["message"] = view.restart_required
    for kept in ("agentVersion", "lastSeenTime"):  # reported by agents, not by KubeVirt
        if kept in old:
            entry[kept] = old[kept]
    if agent is None:
        entry["agent"] = "Disconnected" if old.get("lastSeenTime") else "Unknown"
    else:
        entry["agent"] = "Connected" if agent.connected else (
            "Disconnected" if old.get("lastSeenTime") else "Unknown")
        if agent.version:
            entry["agentVersion"] = agent.version
        # written when the agent is found or lost, not at every answer (no write storm)
        if agent.connected and old.get("agent") != "Connected":
            entry["lastSeenTime"] = now
        if not agent.connected and old.get("agent") == "Connected":
            entry["lastSeenTime"] = now
    return entry


def _names(views: Sequence[MemberView]) -> str:
    return ", ".join(f"{v.name} ({v.phase})" for v in views)


def runs(status: Mapping[str, Any]) -> dict[str, tuple[str, str | None, str | None]]:
    """The runs kept in an InGuestCluster status (see `build`): member -> (uid, node,
    address)."""
    found: dict[str, tuple[str, str | None, str | None]] = {}
    for m in status.get("members") or ():
        run = m.get("run") if isinstance(m, Mapping) else None
        if isinstance(run, Mapping) and run.get("uid") and m.get("name"):
            found[str(m["name"])] = (str(run["uid"]), run.get("node") or None,
                                     run.get("address") or None)
    return found


def build(views: Sequence[MemberView], old: Mapping[str, Any], generation: int,
          now: str, agents: Mapping[str, AgentSeen] | None = None,
          epoch: int | None = None,
          runs: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """The InGuestCluster status for these member views (and, once the supervisor
    reaches them, their agents; `epoch` is the leader's; `runs`: the run each member's
    agent was last heard on, {"uid", "node", "address"}, kept as it was where not
    given)."""
    old_members = {m.get("name"): m for m in old.get("members") or ()}
    running = [v for v in views if v.running]
    down = [v for v in views if not v.running]
    starting = [v for v in views if v.phase in _STARTING]
    majority = len(views) // 2 + 1
    conditions = list(old.get("conditions") or ())
    if not views:
        conditions = set_condition(conditions, AVAILABLE, False, "NoMembers",
                                   "no VirtualMachine is a member", now, generation)
    elif len(running) >= majority:
        conditions = set_condition(conditions, AVAILABLE, True, "MajorityRunning",
                                   f"{len(running)} of {len(views)} members running",
                                   now, generation)
    else:
        conditions = set_condition(conditions, AVAILABLE, False, "MajorityNotRunning",
                                   f"{len(running)} of {len(views)} members running; "
                                   f"not running: {_names(down)}", now, generation)
    conditions = set_condition(
        conditions, DEGRADED, bool(views) and bool(down),
        "MembersNotRunning" if down else "AllMembersRunning",
        f"not running: {_names(down)}" if down else "every member is running", now, generation)
    conditions = set_condition(
        conditions, PROGRESSING, bool(starting),
        "MembersStarting" if starting else "Settled",
        f"starting: {_names(starting)}" if starting else "no member is starting",
        now, generation)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "memberCount": len(views),
        "readyMembers": len(running),
        "members": [_member(v, old_members.get(v.name, {}),
                            None if agents is None else agents.get(v.name), now,
                            (runs or {}).get(v.name))
                    for v in views],
        "conditions": conditions,
    }
    if agents is not None:
        connected = sum(1 for a in agents.values() if a.connected)
        status["quorum"] = connected + 1 > (len(views) + 1) // 2
    if epoch is not None:
        status["epoch"] = epoch
    return status
