"""What a supervisor's pass writes: the status of the cluster, its ServiceGroups and
Switchovers, Events for every transition, the groups' endpoints, and metrics.

Writes are level-based and sparse: a status is patched only when it differs from what
the object holds, an Event only on a transition, an EndpointSlice only when where the
group is online changed. So a settled cluster costs no API writes, and 1,500 members
restarting together do not become a storm of identical patches.

A process that starts (a restart, the other replica taking over) knows nothing of the
agents until its followers have reached them: its first publication for a cluster waits
until every link has its first answer or failure (each ends within the client's timeout,
and its contact report wakes the supervisor), at most FIRST_ANSWER_SECONDS from the
link's creation. Before that, what the status says (Connected, Online on a member) is the
best knowledge there is; writing members Disconnected and groups Unknown, and announcing
a failover for every group, only to write it all back a second later, would be false,
and over 500 clusters a storm of writes and Events. Where a group was online is read from
its status for the same reason (no GroupOnline Event where nothing moved).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from guestha.controller import cluster_status, group_status, metrics
from guestha.controller.links import MemberLink
from guestha.controller.observe import CLEAR_ANNOTATION, GroupFacts
from guestha.engine import GroupDecision, Plan, SwitchoverDecision
from guestha.model.conditions import set_condition
from guestha.model.members import MemberView
from guestha.protocol.states import ONLINE, UNKNOWN

EVENT_REASONS = {"online": "OnlineRequested", "offline": "OfflineRequested",
                 "clear": "FaultsCleared", "fence": "FenceRequested"}
FINISHED = ("Succeeded", "Failed")
FIRST_ANSWER_SECONDS = 15.0  # the longest a new process waits for agents before publishing

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Writer(Protocol):
    """The Kubernetes API as a pass writes to it (controller.outputs has the real one)."""

    async def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None: ...

    def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None: ...

    async def endpoints(self, group: Mapping[str, Any], addresses: Mapping[str, str]) -> None: ...


@dataclass
class GroupRecord:
    """What the publisher remembers of a group between passes."""

    online_on: tuple[str, ...] | None = None  # where the last pass found it (None: unknown)
    home: str | None = None  # where a Failover group was last Online (at first: its status)
    moving: tuple[str, str, float] | None = None  # (from, cause, since) of a failover
    announced: bool = False  # FailoverStarted told (once the online elsewhere is planned)
    endpoints: tuple[tuple[str, str], ...] | None = None  # what the slice was set to
    # The timeline of a move, for the one log line it ends with (see _timeline): when
    # the group was first found gone from home (a failover or a Switchover), the first
    # pass that planned its online elsewhere, and the move done, not yet logged.
    left: float | None = None
    planned: float | None = None
    moved: dict[str, Any] | None = None
    # The failovers this process counted, and the last one: written with every status
    # until the index shows them, so neither a status the index has not caught up with
    # (the next failover would count from it) nor a lost write loses one.
    failovers: int | None = None
    last_failover: dict[str, Any] | None = None


@dataclass
class Publisher:
    """Writes one cluster's outputs (see the module docstring)."""

    namespace: str
    cluster: str
    writer: Writer
    records: dict[str, GroupRecord] = field(default_factory=dict)
    leaving: frozenset[str] = frozenset()  # members leaving the cluster (controller.departure)
    published: bool = False  # this process has published the cluster once
    # Switchover uid -> the phase last written for it (its Event said so)
    _switchover_phases: dict[str, str] = field(default_factory=dict)

    async def publish(self, result: Plan, views: Sequence[MemberView],
                      cluster_body: Mapping[str, Any], groups: Sequence[GroupFacts],
                      group_bodies: Mapping[str, Mapping[str, Any]],
                      switchover_bodies: Mapping[str, Mapping[str, Any]],
                      links: Mapping[str, MemberLink], epoch: int, now: float,
                      fencing: Mapping[str, Any] | None = None,
                      runs: Mapping[str, Mapping[str, str]] | None = None,
                      attempts: Mapping[str, Mapping[str, int]] | None = None,
                      agents_up_to_date: tuple[bool, str, str] | None = None) -> None:
        """Write what changed (`now`: the pass's time.monotonic()); nothing before every
        link's first answer in a new process (see the module docstring). `attempts`: per
        group, the onlines per member that ended Faulted (kept in the group's status, so
        that an operator that starts next counts on); `agents_up_to_date`: the rollout's
        condition (controller.rollout), when known."""
        if not self.published:
            if any(link.contact is None and now - link.created < FIRST_ANSWER_SECONDS
                   for link in links.values()):
                return
            self.published = True
        writes: list[Awaitable[None]] = []
        agents = {name: cluster_status.AgentSeen(
            link.reachable, link.state.report.agent_version if link.state.report else None)
            for name, link in links.items()}
        old = dict(cluster_body.get("status") or {})
        generation = int((cluster_body.get("metadata") or {}).get("generation") or 0)
        new = cluster_status.build(views, old, generation, now_iso(), agents, epoch, runs)
        if agents_up_to_date is not None:
            new["conditions"] = set_condition(new["conditions"], cluster_status.AGENTS_UP_TO_DATE,
                                              *agents_up_to_date, now_iso(), generation)
        for key in ("fencings", "lastFencing"):
            if key in old:
                new[key] = old[key]
        new.update(fencing or {})
        if group_status.differs(old, new):
            writes.append(self.writer.patch_status("inguestclusters", self.cluster, new))
        addresses = {v.name: v.address for v in views if v.address}
        cleared: dict[str, int] = {}
        for action in result.actions:
            if action.kind == "clear" and action.group is not None:
                cleared[action.group] = cleared.get(action.group, 0) + 1
        # every Switchover in the plan moves its group, one finishing in this very pass too
        # (the engine leaves out those finished before)
        switching = {str((switchover_bodies[n].get("spec") or {}).get("serviceGroup"))
                     for n in result.switchovers if n in switchover_bodies}
        by_name = {v.name: v for v in views}
        for g in groups:
            writes.extend(self._group(g, result.groups.get(g.name), group_bodies[g.name],
                                      links, by_name, addresses, cleared.get(g.name, 0),
                                      g.name in switching, now,
                                      (attempts or {}).get(g.name) or {}))
        for name, decision in result.switchovers.items():
            body = switchover_bodies.get(name)
            if body is not None:
                writes.extend(self._switchover(name, body, decision))
        present = {str((b.get("metadata") or {}).get("uid") or n)
                   for n, b in switchover_bodies.items()}
        for uid in set(self._switchover_phases) - present:
            del self._switchover_phases[uid]
        for link in links.values():
            for group, resource, why in link.take_faults():
                body = group_bodies.get(group)
                if body is not None:
                    self.writer.event(body, "Warning", "ResourceFaulted",
                                      f"{resource} on {link.member}: {why}")
        await asyncio.gather(*writes)
        self._timeline(result, now)

    def actions(self, result: Plan, group_bodies: Mapping[str, Mapping[str, Any]],
                cluster_body: Mapping[str, Any]) -> None:
        """An Event per action carried out, on its group (a fencing on the cluster)."""
        for action in result.actions:
            body = cluster_body if action.kind == "fence" else group_bodies.get(action.group or "")
            if body is not None:
                self.writer.event(body, "Warning" if action.kind == "fence" else "Normal",
                                  EVENT_REASONS.get(action.kind, action.kind),
                                  f"{action.kind} on {action.member} ({action.reason}): "
                                  f"{action.message}")

    def forget(self, groups: Sequence[str]) -> None:
        kept = set(groups)
        for name in list(self.records):
            if name not in kept:
                del self.records[name]
                metrics.forget_group(self.namespace, self.cluster, name)

    # -- one group

    def _group(self, g: GroupFacts, decision: GroupDecision | None,
               body: Mapping[str, Any], links: Mapping[str, MemberLink],
               views: Mapping[str, MemberView], addresses: Mapping[str, str | None],
               cleared: int, switching: bool, now: float,
               attempts: Mapping[str, int]) -> list[Awaitable[None]]:
        record = self.records.get(g.name)
        if record is None:
            record = self.records[g.name] = GroupRecord(online_on=_online_on(g.status),
                                                        home=_home(g.status))
        writes: list[Awaitable[None]] = []
        online = tuple(decision.online_on) if decision is not None else ()
        extra = self._failover(g, decision, record, body, links, views, switching, now)
        if record.failovers is not None and "failovers" not in extra \
                and record.failovers > int(g.status.get("failovers") or 0):
            extra["failovers"], extra["lastFailover"] = record.failovers, record.last_failover
        if g.clear_requested and not g.spec.get("frozen"):
            # the clear was carried out this pass (or there was nothing to clear)
            extra["lastClear"] = {"value": g.annotations.get(CLEAR_ANNOTATION),
                                  "time": now_iso(), "faultsCleared": cleared}
        members = [replace(_seen(links.get(m), m, g.name), online_attempts=attempts.get(m, 0))
                   for m in (str(s.get("member")) for s in g.spec.get("systems") or ())]
        wanted = g.wanted_online or bool(online)
        new = group_status.build(g.status, g.generation, decision, members, wanted,
                                 bool(g.spec.get("frozen")), now_iso(), extra)
        if group_status.differs(g.status, new):
            writes.append(self.writer.patch_status("servicegroups", g.name, new))
        if decision is not None and online != record.online_on:
            if online:
                self.writer.event(body, "Normal", "GroupOnline",
                                  f"online on {', '.join(online)}")
            elif record.online_on:
                self.writer.event(body, "Normal", "GroupOffline",
                                  f"offline on {', '.join(record.online_on)}")
            record.online_on = online
        if g.spec.get("service"):
            slice_addresses = tuple(sorted((m, a) for m in online
                                           if (a := addresses.get(m)) is not None))
            if slice_addresses != record.endpoints:
                record.endpoints = slice_addresses
                writes.append(self.writer.endpoints(body, dict(slice_addresses)))
        metrics.set_group_state(self.namespace, self.cluster, g.name,
                                decision.state if decision is not None else UNKNOWN)
        metrics.GROUP_ONLINE_MEMBERS.labels(self.namespace, self.cluster, g.name).set(
            len(online))
        return writes

    def _failover(self, g: GroupFacts, decision: GroupDecision | None, record: GroupRecord,
                  body: Mapping[str, Any], links: Mapping[str, MemberLink],
                  views: Mapping[str, MemberView], switching: bool,
                  now: float) -> dict[str, Any]:
        """failovers and lastFailover of a Failover group: one starts when the group is
        no longer online on the member it was last Online on (its home), unless a
        Switchover moves it; it ends when the group is Online on another member (back
        home: no failover; an application restarted in place leaves home for a moment,
        and is no failover either). FailoverStarted is told once the plan puts it
        online elsewhere; the metric counts failovers finished. Its cause is
        ResourceFaulted when the home's agent still
        answers and KubeVirt still runs its guest (the group faulted there), MemberLeft
        when the home is no member any more (controller.departure moved it), MemberLost
        otherwise (a crashed guest's VMI can go Failed before the stream to its dead
        agent notices the closed connection); its duration runs from
        the first pass that found the group gone from home (the loss noticed)."""
        if decision is None or g.spec.get("type", "Failover") != "Failover":
            return {}
        online = tuple(decision.online_on)
        home = record.home
        if home is None or home in online:
            record.moving = None
            record.announced = False
            record.left = record.planned = None
            if decision.state == ONLINE and online:
                record.home = online[0]
            return {}
        if record.left is None:
            record.left = now
        if record.moving is None and not switching:
            link, view = links.get(home), views.get(home)
            running = view is None or (view.running and not view.deleting)
            cause = ("MemberLeft" if home in self.leaving else
                     "ResourceFaulted" if link is not None and link.reachable and running
                     else "MemberLost")
            record.moving = (home, cause, now)
        if record.moving is not None and not record.announced \
                and decision.target not in (None, home):
            record.announced = True
            self.writer.event(body, "Warning", "FailoverStarted",
                              f"{g.name} no longer online on {home} ({record.moving[1]}), "
                              f"going to {decision.target}: {decision.message}")
        if decision.state != ONLINE or not online:
            return {}
        record.home = online[0]
        record.moved = {"group": g.name, "from": home, "to": online[0], "left": record.left,
                        "planned": record.planned, "confirmed": now,
                        "cause": record.moving[1] if record.moving else "Switchover",
                        "noticed": record.left if record.left is not None else now}
        record.left = record.planned = None
        if record.moving is None:  # moved on purpose (a Switchover)
            return {}
        origin, cause, since = record.moving
        if not record.announced:  # online elsewhere before a plan named the target
            self.writer.event(body, "Warning", "FailoverStarted",
                              f"{g.name} no longer online on {origin} ({cause})")
        record.moving = None
        record.announced = False
        duration = now - since
        metrics.FAILOVERS.labels(self.namespace, self.cluster, g.name, cause).inc()
        metrics.FAILOVER_SECONDS.labels(self.namespace, self.cluster).observe(duration)
        self.writer.event(body, "Normal", "FailedOver",
                          f"from {origin} to {online[0]} in {duration * 1000:.0f} ms ({cause})")
        record.failovers = max(record.failovers or 0, int(g.status.get("failovers") or 0)) + 1
        record.last_failover = {"from": origin, "to": online[0], "reason": cause,
                                "time": now_iso(), "durationMilliseconds": int(duration * 1000)}
        return {"failovers": record.failovers, "lastFailover": record.last_failover}

    def _timeline(self, result: Plan, now: float) -> None:
        """One INFO line per move of a Failover group (a failover or a Switchover), with
        the monotonic times (time.monotonic(), the host's CLOCK_MONOTONIC, so a benchmark
        on the same host can set them against its own) of each step: `noticed`, the pass
        that found the group gone from home (a failover's start); `planned`, the first
        pass whose plan onlined it elsewhere; `confirmed`, the pass that found it Online
        there (woken by the agent's event); `endpoints`, that pass's writes done, its
        EndpointSlice among them. Pass times are a pass's start; hack/bench/failover
        reads these lines."""
        for action in result.actions:
            record = self.records.get(action.group or "")
            if action.kind == "online" and record is not None and record.left is not None \
                    and record.planned is None:
                record.planned = now
        done = time.monotonic()
        for record in self.records.values():
            moved, record.moved = record.moved, None
            if moved is None:
                continue
            planned = moved["planned"] if moved["planned"] is not None else moved["noticed"]
            log.info("%s/%s: moved %s from %s to %s (%s): noticed=%.6f planned=%.6f "
                     "confirmed=%.6f endpoints=%.6f", self.namespace, self.cluster,
                     moved["group"], moved["from"], moved["to"], moved["cause"],
                     moved["noticed"], planned, moved["confirmed"], done)

    # -- one switchover

    def _switchover(self, name: str, body: Mapping[str, Any],
                    decision: SwitchoverDecision) -> list[Awaitable[None]]:
        old = dict(body.get("status") or {})
        new: dict[str, Any] = {
            "phase": decision.phase, "from": decision.from_member, "to": decision.to,
            "reason": decision.reason, "message": decision.message,
            "observedGeneration": int((body.get("metadata") or {}).get("generation") or 0)}
        if not old.get("startTime"):
            new["startTime"] = now_iso()
        if decision.phase in FINISHED and not old.get("completionTime"):
            new["completionTime"] = now_iso()
        new = {k: v for k, v in new.items() if v is not None}
        if not group_status.differs(old, new):
            return []
        # the phase this process wrote last stands over a status read that lags it
        # (one Event per phase, however late the index)
        uid = str((body.get("metadata") or {}).get("uid") or name)
        if self._switchover_phases.get(uid, old.get("phase")) != decision.phase:
            self.writer.event(body, "Warning" if decision.phase == "Failed" else "Normal",
                              f"Switchover{decision.phase}", decision.message)
        self._switchover_phases[uid] = decision.phase
        return [self.writer.patch_status("switchovers", name, new)]


def _home(status: Mapping[str, Any]) -> str | None:
    """Where a group was last Online by the status as written (by this operator or one
    before it): a process that starts while the group is away from there (a restart
    mid-failover, the other replica taking over) still counts the failover it finishes."""
    online = list(status.get("onlineOn") or ())
    return str(online[0]) if status.get("state") == ONLINE and len(online) == 1 else None


def _online_on(status: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Where the status as written says the group is online (None: it says nothing)."""
    if not status.get("state") or "onlineOn" not in status:
        return None
    return tuple(str(m) for m in status.get("onlineOn") or ())


def _seen(link: MemberLink | None, member: str, group: str) -> group_status.MemberSeen:
    if link is None:
        return group_status.MemberSeen(member, UNKNOWN, False)
    report = link.state.report
    resources: list[group_status.ResourceSeen] = []
    if report is not None and group in report.groups:
        for r in report.groups[group].resources:
            resources.append(group_status.ResourceSeen(
                r.name, link.state.resources.get((group, r.name), r.state), r.restarts,
                r.message))
    known = {r.name for r in resources}
    for (g, name), state in sorted(link.state.resources.items()):
        if g == group and name not in known:  # reported by events since the last report
            resources.append(group_status.ResourceSeen(name, state))
    return group_status.MemberSeen(member, link.state.groups.get(group, UNKNOWN),
                                   link.reachable, tuple(resources))

