"""One InGuestCluster's supervisor: the loop that keeps its groups where they should be.

One asyncio task per cluster (kopf's daemon) holds a MemberLink per running member and
one EventFollower (a task per member, no thread). Each pass is level-based and
idempotent: read what the API shows (kopf's indexes, through `read`), put each agent its
desired configuration, build the engine's ClusterState, ask the engine for a plan, carry
out its actions (group commands over the channel, fencing through KubeVirt), then write
what changed (controller.publisher). A pass runs when anything it reads changes (an
agent's event, a watched object) and when the engine's next bound passes, so a fault is
planned for within milliseconds and a bound is acted on when it passes.

Only the leader acts (safety rule 2): without the Lease a pass plans (to stay warm) but
carries out nothing and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from guestha.channel import looplag
from guestha.channel.aio import (
    AgentRefusal,
    AsyncAgentClient,
    ChannelError,
    Contact,
    EventFollower,
    FollowSettings,
    Member,
)
from guestha.controller import (
    cluster_status,
    departure,
    group_status,
    heartbeatkeys,
    metrics,
    observe,
    rollout,
    rotation,
    userdata,
)
from guestha.controller.fencingtally import FencingTally
from guestha.controller.links import MemberLink
from guestha.controller.probes import Prober
from guestha.controller.publisher import Publisher, Writer, now_iso
from guestha.controller.sightings import Sightings
from guestha.controller.switchovermemory import SwitchoverMemory
from guestha.engine import Action, ClusterState, GroupState, Plan, plan, safety
from guestha.model.agentconfig import (
    GroupSource,
    cluster_offline_budget,
    counted_offline_budget,
    held_after_push,
    member_config,
)
from guestha.model.cluster import ClusterSpec
from guestha.model.members import MemberPhase, MemberView
from guestha.protocol.desired import DesiredConfig
from guestha.protocol.events import CONFIG_APPLIED, EventBatch
from guestha.protocol.fields import FieldError
from guestha.protocol.states import FAULTED, ONLINE
from guestha.protocol.status import StatusReport

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0  # a pass at least this often, whatever happens
SETTLE_SECONDS = 0.005  # let a burst of changes land in one pass
FENCE_POLL_SECONDS = 1.0  # a pass this often while a stop waits for its node's word
OPERATOR_LEASE_SECONDS = 15  # how long one contact keeps the operator's vote at the agents
ADMISSION_SECONDS = 10.0  # the longest a new supervisor's first passes hold their admission


@dataclass(frozen=True)
class Run:
    """One run of a member's guest: its VMI's uid and the node it ran on. A stop is
    judged for the run the groups were on, not for whatever VMI has the name now."""

    uid: str
    node: str | None
    address: str | None = None  # where its agent was reached (None: not known)


@dataclass(frozen=True)
class Snapshot:
    """What one pass reads from the API (through kopf's indexes)."""

    cluster: Mapping[str, Any]  # the InGuestCluster's body
    views: Sequence[MemberView]
    groups: Sequence[observe.GroupFacts]
    group_bodies: Mapping[str, Mapping[str, Any]]
    switchovers: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]]
    switchover_bodies: Mapping[str, Mapping[str, Any]]
    nodes: Mapping[str, bool]  # node name -> Ready and renewing its Lease
    departing: Sequence[MemberView] = ()  # members leaving (controller.departure)


class Fencer(Protocol):
    """Fencing through KubeVirt and its verdicts (controller.outputs has the real one)."""

    async def fence(self, member: str, run: Run) -> None: ...

    def stop_confirmed(self, member: str, run: Run, fenced: bool, view: MemberView) -> bool:
        """Whether the stop of `run` is confirmed (DESIGN.md rule 1b); `fenced`: the
        operator requested it."""
        ...


class Outputs(Writer, Fencer, Protocol):
    """Everything a pass does outside the process."""


@dataclass
class GroupMemory:
    """Online attempts per member (VCS OnlineRetryLimit), from the agents' reports."""

    pending: set[str] = field(default_factory=set)  # members asked to online it
    failures: dict[str, int] = field(default_factory=dict)  # onlines there that faulted


class ClusterSupervisor:
    """The supervisor of one InGuestCluster (see the module docstring)."""

    def __init__(self, namespace: str, name: str, read: Callable[[], Snapshot],
                 outputs: Outputs, client: Callable[[Member], AsyncAgentClient], port: int,
                 heartbeat_secret: bytes, leader: Callable[[], bool],
                 epoch: Callable[[], int], follow: FollowSettings | None = None,
                 departures: departure.Departures | None = None,
                 renewals: rotation.Rotation | None = None,
                 heartbeat_keys: heartbeatkeys.HeartbeatKeys | None = None) -> None:
        self.namespace, self.name = namespace, name
        self._read = read
        self._out = outputs
        self._client = client
        self._port = port
        self._leader = leader
        self._epoch = epoch
        self._follower = EventFollower(self._follower_client, self._on_events,
                                       self._on_contact, follow)
        self.links: dict[str, MemberLink] = {}
        self.sightings = Sightings()
        self.publisher = Publisher(namespace, name, outputs)
        self.rollout = rollout.Rollout(namespace, name, userdata.operator_bundle, outputs,
                                       self._follower.expect_restart, wake=self.wake)
        self._groups: dict[str, GroupMemory] = {}
        self._runs: dict[str, Run] = {}  # member -> the run its agent was last seen on
        self._fences: dict[str, tuple[Run, float]] = {}  # member -> (run, requested at)
        self._fencing = FencingTally()  # status.fencings / lastFencing to write
        self._stopped: set[str] = set()  # runs whose stop was confirmed (proof once given)
        self._budgets: dict[str, int] = {}  # run uid -> the offline budget its agent holds
        # member -> (when its agent confirmed its configuration, the peers' addresses in it)
        self._peer_addresses: dict[str, tuple[float, dict[str, str | None]]] = {}
        # the Switchover phases decided here, until the index shows them
        self._switchovers = SwitchoverMemory()
        self._wake = asyncio.Event()
        self._lag = looplag.of_running_loop()  # the operator's lateness (engine.fencing)
        self._prober = Prober(namespace, name, self.wake)
        self.last_plan: Plan | None = None
        self.admitting = False  # in its first passes, holding its admission (run)
        self.departures = departures or departure.Departures(namespace, name)
        self.renewals = renewals or rotation.Rotation(namespace, name)
        self.heartbeat_keys = heartbeat_keys or heartbeatkeys.HeartbeatKeys(
            namespace, name, heartbeat_secret)

    def wake(self) -> None:
        self._wake.set()

    def settled(self) -> bool:
        """Whether the first passes' work is done: every running member's agent answered
        or failed once, and (leading) every one that answers has its configuration."""
        leader = self._leader()
        return all(link.contact is not None and (
            not leader or not link.reachable or link.applied is not None)
            for link in self.links.values())

    async def run(self, stopped: Callable[[], bool],
                  admitted: Callable[[], None] | None = None) -> None:
        """Passes until `stopped`. `admitted` (controller.clusters' admission) is called
        once the supervisor is `settled`, or ADMISSION_SECONDS after its start; until then
        (`admitting`) it starts no agent upgrade."""
        admit_by = time.monotonic() + ADMISSION_SECONDS
        self.admitting = admitted is not None
        try:
            while not stopped() and not self.departures.finished:
                deadline = await self.step()
                if admitted is not None and (self.settled() or time.monotonic() >= admit_by):
                    admitted()
                    admitted = None
                    self.admitting = False
                timeout = FENCE_POLL_SECONDS if self._fences else RESYNC_SECONDS
                if admitted is not None:
                    timeout = min(timeout, max(0.0, admit_by - time.monotonic()))
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # not wait_for: leadership._call
                        await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(SETTLE_SECONDS)
        finally:
            self.rollout.close()
            await self._prober.aclose()
            await self._follower.aclose()
            await asyncio.gather(*(link.close() for link in self.links.values()),
                                 return_exceptions=True)
            self.links.clear()

    # -- what the follower tells (in each member's task)

    def _follower_client(self, member: str) -> AsyncAgentClient:
        return self.links[member].client()

    async def _on_events(self, member: str, batch: EventBatch | None,
                         report: StatusReport | None) -> None:
        link = self.links.get(member)
        if link is None:
            return
        if report is not None:
            link.on_report(report)
        if batch is not None:
            link.on_batch(batch)
            if any(e.kind == CONFIG_APPLIED for e in batch.events):
                # the groups' resources changed: read them whole once (events name only
                # the resources that change state)
                try:
                    link.on_report(await link.commands.status())
                except (AgentRefusal, ChannelError) as e:
                    log.info("%s/%s: status after a new configuration: %s", self.namespace,
                             member, e)
        self.wake()

    async def _on_contact(self, member: str, contact: Contact) -> None:
        link = self.links.get(member)
        if link is None:
            return
        if contact.reachable and not link.reachable:
            # back from a silence (or a new run): it may have heard the others until now
            self.sightings.peer_returned(member, time.monotonic(), self.links)
        link.on_contact(contact)
        self.wake()

    # -- one pass

    async def step(self) -> float | None:
        """One pass; returns the time (monotonic) of the engine's next bound."""
        if self.departures.finished:
            return None  # a deleted cluster, released: nothing is left to do
        snap = self._read()
        now = time.monotonic()
        try:
            spec = ClusterSpec.from_body(snap.cluster.get("spec") or {})
        except (FieldError, ValueError) as e:
            log.error("%s/%s: spec refused: %s", self.namespace, self.name, e)
            return None
        current = snap.views  # the members; those leaving are planned for too, until let go
        snap = dataclasses.replace(snap, views=self.departures.joined(
            snap.cluster, snap.views, snap.departing, now))
        await self._sync_links(snap.views)
        self.sightings.members([v.name for v in snap.views], now)
        self._recall_runs(snap)
        leader = self._leader()
        self.rollout.recall(snap.cluster.get("status") or {}, leader, now, time.time())
        budget = cluster_offline_budget([GroupSource(g.name, g.spec) for g in snap.groups])
        if leader:
            await self.departures.api.add_finalizer(snap.cluster)
            await self._push_configs(snap, budget)
            await self.renewals.rotate(self.links, {v.name: v.address for v in snap.views},
                                       functools.partial(self._out.event, snap.cluster))
            if await self.heartbeat_keys.step(snap.cluster,
                                              functools.partial(self._out.event, snap.cluster)):
                self.wake()  # the next step's keys go out at once
        else:
            self._budgets.clear()  # another leader may give the agents other values
        members = [self._member_facts(v, snap) for v in snap.views]
        self._count_onlines(snap)
        groups = departure.without_members(self._group_states(snap), self.departures.names)
        started = time.perf_counter()
        switchovers = self._switchovers.overlay(snap.switchovers, snap.switchover_bodies)
        state = observe.cluster_state(now, spec, float(OPERATOR_LEASE_SECONDS), members,
                                      groups, switchovers, leader,
                                      float(self._held_budget(budget, snap.views)))
        result = plan(state)
        metrics.PLAN_SECONDS.observe(time.perf_counter() - started)
        self.last_plan = result
        self._prober.start(self.links, state.settings.peer_timeout, now)
        probe_due = self._prober.next_due(self.links, state.settings.peer_timeout, now)
        self._past_lease(state, snap.views)
        if leader:
            await self._execute(result, snap)
            # no agent upgrade in the first passes (each would upload a bundle while
            # other supervisors wait for their admission); the condition stays as it was
            upgrade = None if self.admitting else await self.rollout.step(
                spec.agent.upgrade, self.links, [v.name for v in snap.views], result,
                snap.cluster, now)
            self.publisher.forget([g.name for g in snap.groups])
            self.publisher.leaving = self.departures.names
            runs = {m: {k: v for k, v in (("uid", r.uid), ("node", r.node),
                                          ("address", r.address)) if v}
                    for m, r in self._runs.items()}
            await self.publisher.publish(result, current, snap.cluster, snap.groups,
                                         snap.group_bodies, snap.switchover_bodies,
                                         self.links, self._epoch(), now,
                                         {**self._fencing.status(snap.cluster.get("status") or {}),
                                          **self.departures.status(runs),
                                          **self.heartbeat_keys.status(
                                              snap.cluster.get("status") or {}, now_iso()),
                                          **self.rollout.status()},
                                         runs,
                                         attempts={g.name: dict(self._memory(g.name).failures)
                                                   for g in snap.groups},
                                         agents_up_to_date=None if upgrade is None
                                         else rollout.condition(upgrade))
            self._switchovers.decided(result.switchovers, snap.switchover_bodies)
            await self._let_go(state, snap)
        due = self.renewals.next_due if leader else None
        return min((t for t in (result.next_wakeup, due, probe_due) if t is not None),
                   default=None)

    async def _let_go(self, state: ClusterState, snap: Snapshot) -> None:
        """Members leaving that may go now are let go (controller.departure); a deleted
        cluster whose members all left is released."""
        def applied_empty(member: str) -> bool:
            link = self.links.get(member)
            return link is not None and link.applied is not None \
                and not link.applied.groups and not link.applied.peers

        def pending(member: str) -> bool:
            return any(member in m.pending for m in self._groups.values())

        views = {v.name: v for v in snap.views}

        def never_ran(member: str) -> bool:
            view = views.get(member)
            return member not in self._runs and view is not None and \
                view.phase in (MemberPhase.MISSING, MemberPhase.STOPPED)

        if await self.departures.settle(state, applied_empty, pending,
                                        state.settings.offline_timeout,
                                        functools.partial(self._out.event, snap.cluster),
                                        never_ran):
            self.wake()  # the others' peer lists drop them at once
        await self.departures.finish(
            ((snap.group_bodies[g.name], g.status) for g in snap.groups),
            lambda body, status: self._out.patch_status(
                "servicegroups", str(body["metadata"]["name"]), status), now_iso())

    def _recall_runs(self, snap: Snapshot) -> None:
        """The run each member's groups were last seen on, as the InGuestCluster status
        keeps it, for members this process has not heard yet (it just started, or just
        took over): a member's new run must not speak for it while an older run that an
        earlier operator heard may still run its groups (see `_member_facts`)."""
        status = snap.cluster.get("status") or {}
        kept = {**departure.departing_runs(status), **cluster_status.runs(status)}
        for view in snap.views:
            if view.name not in self._runs and view.name in kept:
                self._runs[view.name] = Run(*kept[view.name])

    def _past_lease(self, state: ClusterState, views: Sequence[MemberView]) -> None:
        """A run that a newer run of its member replaced (or whose VMI is gone) and whose
        quorum lease ran out (rule 1c) is as good as stopped: its agent self-fenced and,
        no longer the member's, can never be told to online anything again. So the new
        run may speak for the member from now on, even where the node never confirms
        the old run's stop (a VMI force-deleted on a node that stopped answering)."""
        # only a run whose VMI left the API or was replaced: a VMI of the same uid may be
        # Running again (its node answers again), its agent back, its groups online
        current = {v.name: v.uid for v in views}
        for member in state.members:
            run = self._runs.get(member.name)
            if run is None or run.uid in self._stopped or current.get(member.name) == run.uid:
                continue
            if safety.confirmed_down(member, state):
                log.info("%s/%s: run %s of %s is past its quorum lease", self.namespace,
                         self.name, run.uid, member.name)
                self._confirmed(member.name, run)

    async def _sync_links(self, views: Sequence[MemberView]) -> None:
        """A link per running member's VMI; a new run of the guest (another VMI uid) or a
        new address gets a new link, so nothing the old run said counts for the new."""
        wanted = {v.name: v for v in views if v.running and v.uid}
        for name in list(self.links):
            link = self.links[name]
            view = wanted.get(name)
            if view is None or (view.address, view.uid) != (link.address, link.uid):
                del self.links[name]
                await self._follower.unfollow(name)
                await link.close()
        for name, view in wanted.items():
            if name not in self.links:
                member = Member(self.namespace, name, self._port, view.address)
                self.links[name] = MemberLink(self.namespace, self.name, member, view.uid,
                                              functools.partial(self._client, member))
                self._follower.follow(name)

    def _held_budget(self, wanted: int, views: Sequence[MemberView]) -> int:
        """The offline budget the engine counts (agentconfig.counted_offline_budget). A
        silent agent keeps the configuration it last applied, which may carry a longer
        budget than the groups ask for now (edited since, or put by an earlier
        operator): it is known only for a run whose agent confirmed a configuration to
        this process while it led."""
        for uid in set(self._budgets) - {r.uid for r in self._runs.values()} \
                - {link.uid for link in self.links.values()}:
            del self._budgets[uid]
        runs = [self._runs.get(v.name) for v in views]
        return counted_offline_budget(wanted, [None if r is None else self._budgets.get(r.uid)
                                               for r in runs])

    def _pushed(self, link: MemberLink, config: DesiredConfig) -> None:
        if not link.uid:
            return
        held = held_after_push(self._budgets.get(link.uid),
                               config.fencing.offline_timeout_seconds, link.applied == config)
        if held is not None:
            self._budgets[link.uid] = held
        if link.applied == config:
            addresses = {p.member: p.address for p in config.peers}
            known = self._peer_addresses.get(link.member)
            if known is None or known[1] != addresses:
                self._peer_addresses[link.member] = (time.monotonic(), addresses)

    async def _push_configs(self, snap: Snapshot, budget: int) -> None:
        names = [v.name for v in snap.views]
        addresses = {v.name: v.address for v in snap.views}
        sources = [GroupSource(g.name, g.spec) for g in snap.groups]
        spec = snap.cluster.get("spec") or {}
        pushes = []
        for name, link in self.links.items():
            if not link.reachable:
                continue
            try:
                config = member_config(self.name, name, names, addresses, sources, spec,
                                       self.heartbeat_keys.send, OPERATOR_LEASE_SECONDS,
                                       budget, self.heartbeat_keys.accept)
            except ValueError as e:
                log.warning("%s/%s: no configuration for %s: %s", self.namespace, self.name,
                            name, e)
                continue
            config = self.departures.config_for(name, link.reachable, link.state.groups,
                                                config)
            pushes.append((link, config))
        await asyncio.gather(*(link.push(config) for link, config in pushes))
        for link, config in pushes:
            self._pushed(link, config)
        took = {link.member: link.applied == config for link, config in pushes}
        self.heartbeat_keys.took({v.name: took.get(v.name, False) for v in snap.views
                                  if v.running})

    def _member_facts(self, view: MemberView, snap: Snapshot) -> observe.MemberFacts:
        """The member as the engine sees it. While the run its groups were last seen on
        (self._runs) is not confirmed stopped, a new run's agent does not speak for the
        member: the old guest may still run a group (a force-deleted VMI on a node that
        stopped answering keeps its qemu), and the new agent knows nothing of it. The
        member stays the old run (silent, its last report as history) until that stop
        is confirmed or its quorum lease runs out."""
        now = time.monotonic()
        link = self.links.get(view.name)
        sight = self.sightings.of(view.name)
        confirmed = self._stop_confirmed(view, snap)
        run = self._runs.get(view.name)
        speaks = link is not None and link.reachable and bool(view.uid)
        if speaks and run is not None and run.uid != view.uid:
            speaks = run.uid in self._stopped  # a new run, once the old one is proven off
        if speaks and link is not None and view.uid:
            if run is None or run.uid != view.uid:
                if run is not None:
                    self._stopped.discard(run.uid)
                self._runs[view.name] = Run(view.uid, view.node, view.address)
                confirmed = False  # the new run is running
            if link.last_contact is not None:
                self.sightings.answered(view.name, link.last_contact, link.state.groups)
        replaced = run if run is not None and run.uid != view.uid and not speaks else None
        for name, other in self.links.items():
            if name != view.name and other.reachable:
                self.sightings.heard(view.name, self._heard(name, other, view, replaced, now),
                                     name)
        fence = self._fences.get(view.name)
        spec = snap.cluster.get("spec") or {}
        capacity = next((int(m.get("capacity", 100)) for m in spec.get("members") or ()
                         if m.get("name") == view.name), 100)
        heard = max(sight.last_contact, sight.last_heard_by_peers)
        return observe.MemberFacts(
            view=view, capacity=capacity, reachable=speaks,
            last_contact=sight.last_contact, last_heard_by_peers=sight.last_heard_by_peers,
            operator_late=0.0 if speaks else self._lag.late(heard, now),
            node_ready=bool(view.node) and snap.nodes.get(view.node or "", False),
            stop_confirmed=confirmed, fence_requested_at=fence[1] if fence else None,
            migrating=self.rollout.restarting(view.name), groups=dict(sight.groups),
            quorum_lost=speaks and link is not None and link.state.quorum_lost,
            incomplete=observe.incomplete(link.state.groups, link.state.resources)
            if speaks and link is not None else frozenset(),
            vm_since=None if view.created is None
            else now - max(0.0, time.time() - view.created))

    def _heard(self, peer: str, link: MemberLink, view: MemberView, replaced: Run | None,
               now: float) -> float | None:
        """When `peer` last heard the member of `view`, as far as it counts for the run
        the member's groups were on. While that run is `replaced` by a newer one (not
        speaking yet), a peer whose configuration names the new run's address (and not
        the old one's) hears only the new run from when it confirmed that configuration:
        its hearing after that is not the old run's, which must not keep the old run's
        quorum-lease bound from passing."""
        heard = link.hears(view.name, now)
        if replaced is None or heard is None or not view.address:
            return heard
        applied = self._peer_addresses.get(peer)
        if applied is None:
            return heard
        at, addresses = applied
        if addresses.get(view.name) == view.address != replaced.address:
            return min(heard, at)
        return heard

    def _stop_confirmed(self, view: MemberView, snap: Snapshot) -> bool:
        """Rule 1b for the run the member's groups were on (and for a fenced run, which
        is told as an Event and in status): asked only once that run is over or being
        stopped, and remembered, with the moment, as the peers' last hearing."""
        fence = self._fences.get(view.name)
        if fence is not None:
            fenced, _ = fence
            if fenced.uid in self._stopped or self._out.stop_confirmed(
                    view.name, fenced, True, view):
                self._confirmed(view.name, fenced)
                del self._fences[view.name]
                metrics.FENCINGS.labels(self.namespace, self.name, view.name,
                                        "Confirmed").inc()
                self._out.event(snap.cluster, "Warning", "Fenced",
                                f"the stop of {view.name}'s guest (VMI {fenced.uid}) was "
                                f"confirmed by its node")
                self._fencing.confirmed(snap.cluster.get("status") or {}, view.name,
                                        now_iso())
        run = self._runs.get(view.name)
        if run is None:
            return False
        if run.uid in self._stopped:
            return True
        if view.uid == run.uid and view.running:
            return False
        if not self._out.stop_confirmed(view.name, run, False, view):
            return False
        self._confirmed(view.name, run)
        return True

    def _confirmed(self, member: str, run: Run) -> None:
        if run.uid not in self._stopped:
            self._stopped.add(run.uid)
            self.sightings.peer_stopped(member, time.monotonic(), self.links)

    def _memory(self, group: str) -> GroupMemory:
        return self._groups.setdefault(group, GroupMemory())

    def _count_onlines(self, snap: Snapshot) -> None:
        for g in snap.groups:
            if g.name not in self._groups:  # counted on from the status an earlier one wrote
                self._groups[g.name] = GroupMemory(
                    failures=group_status.online_attempts(g.status))
            memory = self._memory(g.name)
            for member in list(memory.pending):
                state = self.sightings.of(member).groups.get(g.name) \
                    if member in self.links else None
                if state == ONLINE:
                    memory.pending.discard(member)
                    memory.failures.pop(member, None)
                elif state == FAULTED:
                    memory.pending.discard(member)
                    memory.failures[member] = memory.failures.get(member, 0) + 1

    def _group_states(self, snap: Snapshot) -> list[GroupState]:
        states = []
        for g in snap.groups:
            facts = observe.GroupFacts(g.name, g.spec, g.status, g.annotations,
                                       dict(self._memory(g.name).failures), g.generation)
            try:
                states.append(observe.group_state(facts))
            except (FieldError, ValueError) as e:
                log.error("%s/%s: ServiceGroup %s left out: %s", self.namespace, self.name,
                          g.name, e)
        return states

    async def _execute(self, result: Plan, snap: Snapshot) -> None:
        """The plan's actions: one member's in order, members at once."""
        by_member: dict[str, list[Action]] = {}
        for action in result.actions:
            by_member.setdefault(action.member, []).append(action)
        await asyncio.gather(*(self._carry_out(actions, snap) for actions in
                               by_member.values()))
        self.publisher.actions(result, snap.group_bodies, snap.cluster)

    async def _carry_out(self, actions: Sequence[Action], snap: Snapshot) -> None:
        for action in actions:
            if action.kind == "fence":
                run = self._runs.get(action.member)
                view = next((v for v in snap.views if v.name == action.member), None)
                if run is None or action.member in self._fences or run.uid in self._stopped \
                        or view is None or view.uid != run.uid:
                    # never seen running, asked already, known stopped, or its VMI is
                    # gone already (KubeVirt finishes it: only the proof is awaited)
                    continue
                log.warning("%s/%s: fencing %s (run %s): %s", self.namespace, self.name,
                            action.member, run.uid, action.message)
                self._fences[action.member] = (run, time.monotonic())
                self._fencing.requested(snap.cluster.get("status") or {}, action.member,
                                        action.reason, action.message, now_iso())
                metrics.FENCINGS.labels(self.namespace, self.name, action.member,
                                        "Requested").inc()
                await self._out.fence(action.member, run)
                continue
            link = self.links.get(action.member)
            if link is None or action.group is None:
                continue
            log.info("%s/%s: %s %s on %s (%s): %s", self.namespace, self.name, action.kind,
                     action.group, action.member, action.reason, action.message)
            if action.kind == "online":
                self._memory(action.group).pending.add(action.member)
            elif action.kind == "clear":
                self._memory(action.group).failures.clear()
            await link.command(action.group, action.kind)
