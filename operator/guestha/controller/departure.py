"""Members leaving a cluster: one removed from the InGuestCluster, or every member when the
cluster is deleted. The operator lets go of a member only once nothing of the cluster can
run there any more, and tells its agent so.

Why this is needed: an agent keeps the configuration it was given last (it saves it, and
applies it again at its own restart), so an operator that simply forgot a removed member
would leave its groups running there and its agent heartbeating and voting for a cluster
that no longer counts it, while the engine, no longer seeing that member, started the
same Failover group elsewhere: two copies (DESIGN.md rule 1).

How a member leaves, by the engine's normal rules (a planned move, never two copies):
1. It stays one of the engine's members, but is taken out of every group's systems
   (`without_members`): the engine plans each group it runs offline there
   (NotInSystems), in its usual dependency order, and online elsewhere only once that
   member is proven not to run it (its agent reports it Offline or Faulted, or the
   member is confirmed down: fenced, or past its quorum lease). The other members keep
   it as a peer meanwhile, so quorum is unchanged while its groups move.
2. Once its agent answers and reports every group Offline or Faulted, it is given the
   empty configuration (`emptied`: no groups, no peers; the heartbeat and fencing
   settings kept): it stops heartbeating, runs nothing, and counts itself alone.
3. Once the agent confirmed that configuration (or, silent, the member runs nothing:
   `departed`), the operator lets go: its link goes, the other members' peer lists drop
   it (their quorum is recomputed with one vote fewer), and, for a removed member, its
   per-member user-data Secret is deleted (a deleted cluster's Secrets are left to the
   garbage collector, through their ownerReferences).

The members leaving are kept in the InGuestCluster's `status.departing` (with
`status.members`, which still lists a member removed while no operator ran), so an
operator that starts in the middle of a departure finishes it.

A deleted cluster is held by the finalizer FINALIZER until every member has left, bounded
by `deletion_bound`: an agent that answers has its groups offline within the offline
budget it holds (its `offlineTimeoutSeconds`, at most 60 s), and a member silent past
that bound plus DELETION_MARGIN_SECONDS (passes, command timeouts, one retry) is reported
(Event `MemberNotWaitedFor`, `status.departing[].message`) and not waited for: the user
asked for the cluster to go, and its guests are theirs to stop. The ServiceGroups of a
deleted cluster stay (they are the user's): their status says the cluster was deleted and
their EndpointSlices are emptied; their Services and slices are owned by the ServiceGroup
and go with it.

The rules are pure functions (`departed`, `ready_to_empty`, `overdue`, `leaving_names`),
tested with tables; `Departures` keeps the memory of one supervisor.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guestha.engine import ClusterState, GroupState, safety
from guestha.model.conditions import set_condition
from guestha.model.members import MemberView
from guestha.protocol.desired import DesiredConfig

log = logging.getLogger(__name__)

FINALIZER = "guestha.io/groups-stopped"
DELETION_MARGIN_SECONDS = 30.0  # beyond the agents' offline budget (module docstring)

# Why a member was let go (the Event's words and status.departing[].reason).
STOPPED = "GroupsStopped"  # its agent confirmed the empty configuration
DOWN = "MemberDown"  # its stop was confirmed, or it is past its quorum lease
SILENT = "RunsNothing"  # its agent is silent, and its last report shows nothing running
NEVER_RAN = "NeverRan"  # no guest of it runs, and no operator ever heard its agent
NOT_WAITED_FOR = "NotWaitedFor"  # the cluster's deletion did not wait for it any longer

# The Events, on the InGuestCluster.
EVENT_LEAVING = "MemberLeaving"
EVENT_DEPARTED = "MemberDeparted"
EVENT_NOT_WAITED_FOR = "MemberNotWaitedFor"
EVENT_CLUSTER_RELEASED = "GroupsStopped"

CLUSTER_DELETED = "ClusterDeleted"  # a ServiceGroup's Ready condition once its cluster went


def leaving_names(status: Mapping[str, Any], current: Collection[str],
                  released: Collection[str]) -> list[str]:
    """Pure: the members leaving: those the status still lists (`status.departing`, or
    `status.members` when no pass has seen them go yet) that are no longer members
    (`current`) and that this operator has not let go of (`released`)."""
    listed: list[str] = []
    for key in ("departing", "members"):
        for entry in status.get(key) or ():
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if isinstance(name, str) and name and name not in listed:
                listed.append(name)
    return [n for n in listed if n not in current and n not in released]


def departing_runs(status: Mapping[str, Any]) -> dict[str, tuple[str, str | None,
                                                                   str | None]]:
    """Pure: the runs `status.departing` keeps: member -> (uid, node, address)."""
    found: dict[str, tuple[str, str | None, str | None]] = {}
    for entry in status.get("departing") or ():
        run = entry.get("run") if isinstance(entry, Mapping) else None
        if isinstance(run, Mapping) and run.get("uid") and entry.get("name"):
            found[str(entry["name"])] = (str(run["uid"]), run.get("node") or None,
                                         run.get("address") or None)
    return found


def without_members(groups: Sequence[GroupState], leaving: Collection[str]) -> list[GroupState]:
    """Pure: the groups as the engine should plan them while `leaving` members go: those
    members taken out of their systems and AutoStartLists (so a group running there is
    planned offline, NotInSystems, and online elsewhere only once proven stopped)."""
    if not leaving:
        return list(groups)
    return [dataclasses.replace(
        g, systems=tuple(s for s in g.systems if s[0] not in leaving),
        auto_start_list=tuple(m for m in g.auto_start_list if m not in leaving))
        for g in groups]


def emptied(config: DesiredConfig) -> DesiredConfig:
    """The configuration of a member that leaves: no groups, no peers (it heartbeats
    nobody and counts itself alone), the heartbeat and fencing settings unchanged."""
    return DesiredConfig(groups=(), peers=(), heartbeat=config.heartbeat,
                         fencing=config.fencing)


def ready_to_empty(reachable: bool, groups: Mapping[str, str]) -> bool:
    """Pure: whether a leaving member may be given the empty configuration now: its agent
    answers and reports every group Offline or Faulted (nothing of it runs there; the
    empty configuration then removes groups that are down already)."""
    return reachable and all(s in safety.PROOF_STATES for s in groups.values())


def departed(reachable: bool, empty_applied: bool, heard: bool, groups: Mapping[str, str],
             online_pending: bool, confirmed_down: bool, never_ran: bool = False
             ) -> str | None:
    """Pure: why a leaving member may be let go now (STOPPED, DOWN, SILENT, NEVER_RAN),
    or None.

    - its agent answers: only once it confirmed the empty configuration;
    - it is silent: once confirmed down (rule 1b or 1c), or when this operator `heard`
      its agent, whose last report shows every group Offline or Faulted, and no online
      was asked of it since (an agent starts a Failover group only when told: rule 3; a
      leaving member is in no group's systems, so nothing is asked of it any more). A
      member this operator never heard (it just started) has no report to go by;
    - it `never_ran`: its VM has no guest (Stopped, or no VM at all) and no run of it was
      ever recorded (the supervisor's runs, status.members[].run): no operator ever heard
      its agent, so none ever told it to start anything (rule 3)."""
    if reachable:
        return STOPPED if empty_applied else None
    if confirmed_down:
        return DOWN
    if never_ran:
        return NEVER_RAN
    if heard and not online_pending and all(s in safety.PROOF_STATES
                                            for s in groups.values()):
        return SILENT
    return None


def deletion_bound(offline_budget: float) -> float:
    """Seconds a deleted cluster waits for a member to leave (module docstring)."""
    return offline_budget + DELETION_MARGIN_SECONDS


def overdue(since: float, now: float, bound: float) -> bool:
    """Pure: whether a member leaving since `since` is past the deletion's bound."""
    return now - since >= bound


def orphan_status(old: Mapping[str, Any], cluster: str, generation: int, now: str,
                  clean: bool) -> dict[str, Any]:
    """Pure: the status of a ServiceGroup whose InGuestCluster was deleted: online nowhere;
    Offline when every member confirmed its groups offline (`clean`), else Unknown (a
    member that did not answer may still run it)."""
    message = (f"InGuestCluster {cluster!r} was deleted; its members took this group "
               "offline" if clean else
               f"InGuestCluster {cluster!r} was deleted; some member did not confirm this "
               "group offline (see the cluster's MemberNotWaitedFor Events)")
    conditions = set_condition(old.get("conditions") or (), "Ready", False, CLUSTER_DELETED,
                               message, now, generation)
    return {"observedGeneration": generation, "state": "Offline" if clean else "Unknown",
            "onlineOn": [], "members": [], "message": message, "conditions": conditions}


@dataclass
class Leaving:
    """One member on its way out, as this operator follows it."""

    since: float  # monotonic, when this operator first saw it leave
    announced: bool = False  # its MemberLeaving Event was sent
    heard: bool = False  # its agent answered this operator while it was leaving
    message: str = ""


@dataclass(frozen=True)
class DepartureApi:
    """What letting go writes beyond a pass's usual outputs (controller.clusters gives the
    real calls; a supervisor without one, as in unit tests, writes nothing of this)."""

    delete_userdata: Callable[[str], Awaitable[None]]  # a removed member's Secret, by VM
    add_finalizer: Callable[[Mapping[str, Any]], Awaitable[None]]  # on the cluster body
    remove_finalizer: Callable[[], Awaitable[bool]]  # False: not removed (try again)


async def _nothing(*_: Any) -> None:
    return None


async def _done() -> bool:
    return True


NO_API = DepartureApi(_nothing, _nothing, _done)


@dataclass
class Departures:
    """One supervisor's members leaving (see the module docstring)."""

    namespace: str
    cluster: str
    api: DepartureApi = NO_API
    leaving: dict[str, Leaving] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    deleting: bool = False
    finished: bool = False  # a deleted cluster's members all left; its finalizer removed
    not_waited_for: set[str] = field(default_factory=set)

    def joined(self, body: Mapping[str, Any], views: Sequence[MemberView],
               departing: Sequence[MemberView], now: float) -> list[MemberView]:
        """The views of this pass's members and of those leaving (every member, when
        the cluster is being deleted), and which of them are leaving."""
        self.deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
        current = {v.name for v in views}
        if not self.deleting:
            self.released -= current  # put back into the cluster: a member again
        names = set(leaving_names(body.get("status") or {}, current, self.released))
        extra = [v for v in departing if v.name in names]
        if self.deleting:
            names |= current - self.released
        for name in list(self.leaving):
            if name not in names:
                del self.leaving[name]
        for name in names:
            self.leaving.setdefault(name, Leaving(now))
        wanted = [v for v in views if not (self.deleting and v.name in self.released)]
        return wanted + extra

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.leaving)

    def config_for(self, member: str, reachable: bool, groups: Mapping[str, str],
                   config: DesiredConfig) -> DesiredConfig:
        """What to put to `member`: the empty configuration once it leaves and runs
        nothing, else `config`."""
        if member in self.leaving and ready_to_empty(reachable, groups):
            return emptied(config)
        return config

    def status(self, runs: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
        """`status.departing` as it should be (None removes it), with the run each
        leaving member was last heard on (`runs`, as status.members[].run keeps them:
        a removed member is no longer in status.members)."""
        if not self.leaving:
            return {"departing": None}
        return {"departing": [
            {"name": n, **({"message": self.leaving[n].message}
                           if self.leaving[n].message else {}),
             **({"run": dict(runs[n])} if runs and runs.get(n) else {})}
            for n in sorted(self.leaving)]}

    async def settle(self, state: ClusterState, applied_empty: Callable[[str], bool],
                     pending: Callable[[str], bool], offline_budget: float,
                     event: Callable[[str, str, str], None],
                     never_ran: Callable[[str], bool] = lambda _: False) -> list[str]:
        """Lets go of every leaving member that may go now (`departed`; for a deleted
        cluster, also those past `deletion_bound`); returns their names. `event(type,
        reason, message)` records an Event on the cluster."""
        members = {m.name: m for m in state.members}
        done: list[str] = []
        for name in sorted(self.leaving):
            entry = self.leaving[name]
            if not entry.announced:
                entry.announced = True
                event("Normal", EVENT_LEAVING,
                      f"{name} leaves the cluster{' (deleted)' if self.deleting else ''}: "
                      "its groups are taken offline there first")
            m = members.get(name)
            if m is not None and m.agent_reachable:
                entry.heard = True
            why = None if m is None else departed(
                m.agent_reachable, applied_empty(name), entry.heard, m.groups,
                pending(name), safety.confirmed_down(m, state), never_ran(name))
            if why is None and self.deleting and overdue(entry.since, state.now,
                                                         deletion_bound(offline_budget)):
                why = NOT_WAITED_FOR
            if why is None:
                running = sorted(g for g, s in (m.groups if m else {}).items()
                                 if s not in safety.PROOF_STATES)
                entry.message = (f"waiting for {', '.join(running)} to go offline there"
                                 if running else "waiting for its agent to confirm it runs "
                                 "nothing")
                continue
            if why == NOT_WAITED_FOR:
                self.not_waited_for.add(name)
                event("Warning", EVENT_NOT_WAITED_FOR,
                      f"{name} did not confirm its groups offline within "
                      f"{deletion_bound(offline_budget):.0f} s of the cluster's deletion: "
                      "not waited for; its guest may still run them")
            else:
                event("Normal", EVENT_DEPARTED, f"{name} left the cluster ({why})")
                if not self.deleting:
                    await self.api.delete_userdata(name)
            log.info("%s/%s: %s let go (%s)", self.namespace, self.cluster, name, why)
            del self.leaving[name]
            self.released.add(name)
            done.append(name)
        return done

    async def finish(self, groups: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
                     write_group: Callable[[Mapping[str, Any], dict[str, Any]],
                                           Awaitable[None]],
                     now: str) -> None:
        """A deleted cluster whose members all left: its ServiceGroups (body, status)
        told so, then the finalizer removed (the garbage collector takes the rest)."""
        if not self.deleting or self.leaving or self.finished:
            return
        clean = not self.not_waited_for
        for body, status in groups:
            generation = int((body.get("metadata") or {}).get("generation") or 0)
            await write_group(body, orphan_status(status, self.cluster, generation, now,
                                                  clean))
        self.finished = await self.api.remove_finalizer()
