"""The engine's input, assembled from what the operator observes of one cluster.

Pure: the supervisor gathers the raw pieces (member views from KubeVirt's objects, the
links' reports, the fencing tracker's verdicts, the ServiceGroups and Switchovers as the
API holds them) and this module turns them into guestha.engine's ClusterState. Whatever
the operator cannot see stays unknown here, never assumed: a member whose agent does not
answer keeps its last reported group states with `agent_reachable` False, and only the
engine decides what that allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guestha.engine import ClusterState, GroupState, MemberState, Settings, Switchover
from guestha.model.cluster import ClusterSpec
from guestha.model.members import MemberPhase, MemberView
from guestha.model.servicegroup import ServiceGroupSpec
from guestha.protocol.states import OFFLINE, ONLINE, PARTIAL

CLEAR_ANNOTATION = "guestha.io/clear"
LEASE_MARGIN_SECONDS = 2.0  # beyond the agents' own bound: clocks, scheduling, one heartbeat

_VM_STATES = {
    MemberPhase.MISSING: "Missing", MemberPhase.STOPPED: "Stopped",
    MemberPhase.PENDING: "Starting", MemberPhase.SCHEDULING: "Starting",
    MemberPhase.SCHEDULED: "Starting", MemberPhase.RUNNING: "Running",
    MemberPhase.SUCCEEDED: "Down", MemberPhase.FAILED: "Down",
    MemberPhase.UNKNOWN: "Running",  # it may run: never taken as stopped
}


@dataclass(frozen=True)
class MemberFacts:
    """One member as the supervisor gathered it."""

    view: MemberView
    capacity: int = 100
    reachable: bool = False
    last_contact: float | None = None
    last_heard_by_peers: float | None = None
    operator_late: float = 0.0  # seconds the loop ran late since it was last heard
    node_ready: bool = False
    stop_confirmed: bool = False
    fence_requested_at: float | None = None
    migrating: bool = False
    quorum_lost: bool = False
    groups: Mapping[str, str] = field(default_factory=dict)
    incomplete: frozenset[str] = frozenset()
    vm_since: float | None = None  # the VMI's creation on the supervisor's clock


def incomplete(groups: Mapping[str, str],
               resources: Mapping[tuple[str, str], str]) -> frozenset[str]:
    """Groups Partial only because some resources never started: every resource Online
    or Offline (none faulted or in doubt), some Offline (added while the group ran)."""
    found = set()
    for group, state in groups.items():
        if state != PARTIAL:
            continue
        states = {s for (g, _), s in resources.items() if g == group}
        if OFFLINE in states and states <= {ONLINE, OFFLINE}:
            found.add(group)
    return frozenset(found)


@dataclass(frozen=True)
class GroupFacts:
    """One ServiceGroup of the cluster as the API holds it, plus the supervisor's memory."""

    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    online_attempts: Mapping[str, int] = field(default_factory=dict)
    generation: int = 0

    @property
    def clear_requested(self) -> bool:
        wanted = self.annotations.get(CLEAR_ANNOTATION)
        return bool(wanted) and wanted != (self.status.get("lastClear") or {}).get("value")

    @property
    def wanted_online(self) -> bool:
        """The intent kept in status (a Switchover or a failover set it); autoStart
        until there is one."""
        kept = self.status.get("wantedOnline")
        if isinstance(kept, bool):
            return kept
        return bool(self.spec.get("autoStart", True))


def settings(spec: ClusterSpec, operator_lease: float, offline_timeout: float) -> Settings:
    """`offline_timeout`: the longest offline budget any member's agent may hold (the
    supervisor's count of what it put to them, guestha.model.agentconfig)."""
    heartbeat_interval = spec.heartbeat.interval_milliseconds / 1000.0
    return Settings.of(spec, LEASE_MARGIN_SECONDS + heartbeat_interval, operator_lease,
                       offline_timeout)


def member_state(facts: MemberFacts) -> MemberState:
    return MemberState(
        name=facts.view.name, capacity=facts.capacity, vm=_VM_STATES[facts.view.phase],
        agent_reachable=facts.reachable, last_contact=facts.last_contact,
        last_heard_by_peers=facts.last_heard_by_peers, operator_late=facts.operator_late,
        node_ready=facts.node_ready,
        stop_confirmed=facts.stop_confirmed, fence_requested_at=facts.fence_requested_at,
        migrating=facts.migrating, quorum_lost=facts.quorum_lost, groups=dict(facts.groups),
        incomplete=facts.incomplete, vm_since=facts.vm_since)


def group_state(facts: GroupFacts) -> GroupState:
    """FieldError (a ValueError) naming the field when the spec is not one the engine
    can take (the API's schema should have refused it already)."""
    return GroupState.of(facts.name, ServiceGroupSpec.from_body(facts.spec),
                         wanted_online=facts.wanted_online,
                         online_attempts=facts.online_attempts,
                         clear_requested=facts.clear_requested)


def switchover(name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> Switchover:
    return Switchover(name=name, group=str(spec.get("serviceGroup", "")),
                      to=spec.get("to") or None, phase=str(status.get("phase") or "Pending"),
                      from_member=status.get("from") or None, target=status.get("to") or None)


def cluster_state(now: float, spec: ClusterSpec, operator_lease: float,
                  members: Sequence[MemberFacts], groups: Sequence[GroupState],
                  switchovers: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
                  leader: bool, offline_timeout: float) -> ClusterState:
    return ClusterState(
        now=now, settings=settings(spec, operator_lease, offline_timeout),
        members=tuple(member_state(m) for m in members), groups=tuple(groups),
        switchovers=tuple(switchover(*s) for s in switchovers), leader=leader)
