"""Rolling the operator's agent bundle out to running members, one at a time.

cloud-init puts the agent into a guest once; a newer agent must come over the channel
(DESIGN.md "Injection"). A member whose agent reports another version than the operator's
bundle (userdata.operator_bundle) is upgraded with PUT /v1/bundle: its agent restarts
into the new bundle, adopting what runs (guestha.agent.bundles). The rules, as a pure
function (`decide`, tested with tables):

- one member at a time: while one is upgrading, nothing else starts. It is done when its
  agent answers again with the new version and every group that was Online (or Partial)
  there is so again: Event AgentUpgraded. It failed when its agent reports that it
  rolled the new version back, or it is not done within UPGRADE_TIMEOUT_SECONDS: Event
  AgentUpgradeFailed, and the rollout of that version stops there (a bundle that does not
  come up on one guest is not tried on the next);
- a member is started only while the cluster is healthy: every member's agent answers
  and nothing is moving (the engine's plan has no action and every group is in a steady
  state: `unsettled`); members that run the fewest groups go first (by name among
  equals), so the members most groups depend on restart last;
- `spec.agent.upgrade: Manual` pauses it (a running upgrade is still seen through);
- across clusters, at most `--max-agent-upgrades` have an upgrade in flight at once
  (controller.upgradeslots): a cluster ready to start one waits in line meanwhile
  (reason Queued).

While a member restarts its agent, its silence is expected: the supervisor hands it to
the engine as it does a live-migrating member's (`restarting`), so it is not found lost
(and fenced) before `spec.migration.maxPauseSeconds` past the peer timeout; its peers keep
their quorum without it (docs/agent-api.md "Upgrading the agent"); and the cluster's
EventFollower retries it every 0.25 s instead of backing off (`expect_restart`), so its
new run is followed as soon as it answers. The status condition AgentsUpToDate says where
the rollout is.

The upgrade in flight outlives the operator process: it is written down as the
InGuestCluster's status.agentUpgrade (guestha.model.agentupgrade) in the pass that sent
the bundle, and removed in the pass that finds it done or failed. An operator that
starts, or takes over, while a member restarts into a new bundle reads it (`recall`):
the member's silence is expected as above (not fenced for it), no other member starts
before it is done, and its timeout counts from when the bundle was accepted
(startedTime), not from the new process's start. It is done or failed by the version it
sent (an operator restarted with yet another bundle sees it through first). What the
record does not keep: a member whose upgrade timed out, which an operator that restarts
tries once more (a rolled-back version stops the rollout by the agent's own record,
status.bundle.rollback, whoever runs the operator).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guestha.channel.aio import AgentRefusal, ChannelError
from guestha.cloudinit.bundle import Bundle
from guestha.controller.links import MemberLink
from guestha.controller.publisher import now_iso
from guestha.controller.upgradeslots import SLOTS, UpgradeSlots
from guestha.engine import Plan
from guestha.model.agentupgrade import STATUS_KEY, AgentUpgrade
from guestha.model.cluster import UPGRADE_MANUAL
from guestha.protocol.bundle import BundleUpload
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, PARTIAL

log = logging.getLogger(__name__)

# The longest one member's upgrade may take, from the bundle sent to its agent back with
# the new version and its groups Online: a restart is about 2.5 s; a trial that crashes is
# rolled back after two more starts; groups adopted are probed at once.
UPGRADE_TIMEOUT_SECONDS = 120.0
STEADY_STATES = (ONLINE, PARTIAL, OFFLINE, FAULTED)  # a group in another is moving

AGENT_UPGRADED, AGENT_UPGRADE_FAILED = "AgentUpgraded", "AgentUpgradeFailed"  # Event reasons

# Decision kinds
UP_TO_DATE = "UpToDate"  # every member runs the target version
UPGRADE = "Upgrade"  # send the bundle to `member`
UPGRADED = "Upgraded"  # `member` is back with the target version and its groups
FAILED = "Failed"  # `member`'s upgrade failed (rolled back, or out of time)
WAIT = "Wait"  # nothing to do now (reason says why)


@dataclass(frozen=True)
class MemberAgent:
    """One member's agent as the operator last heard it."""

    name: str
    reachable: bool
    version: str | None  # its agentVersion (None: never reported)
    rollback: str | None = None  # the version it last rolled back (status.bundle.rollback)
    online: frozenset[str] = frozenset()  # groups it reports Online or Partial
    rollback_reason: str = ""  # the agent's words on that rollback


@dataclass(frozen=True)
class InFlight:
    """The member being upgraded: when its bundle was accepted (`since`, monotonic;
    `started`, the same moment in RFC 3339 for status), what it ran, the groups Online (or
    Partial) there then, which must be so again, and the version sent to it."""

    member: str
    since: float
    previous: str
    online: frozenset[str]
    version: str
    started: str

    def record(self) -> AgentUpgrade:
        """status.agentUpgrade for it."""
        return AgentUpgrade(self.member, self.version, self.previous, self.started,
                            tuple(sorted(self.online)))

    @classmethod
    def recalled(cls, record: AgentUpgrade, now: float, wall: float) -> InFlight:
        """The upgrade a record in status describes, for a process whose monotonic clock
        reads `now` when the wall clock reads `wall`: in flight since as long before
        `now` as its startedTime is before `wall` (never in the future: a startedTime
        ahead of this host's clock counts as just started)."""
        return cls(record.member, now - max(0.0, wall - record.started),
                   record.previous_version, frozenset(record.groups), record.version,
                   record.started_time)


@dataclass(frozen=True)
class Decision:
    kind: str
    member: str | None
    reason: str  # the AgentsUpToDate condition's reason
    message: str


def unsettled(plan: Plan) -> str | None:
    """Why the cluster is not steady enough to restart an agent (None: it is): the plan
    acts, or a group is Starting, Stopping, Switching or Unknown."""
    if plan.actions:
        first = plan.actions[0]
        what = " ".join(w for w in (first.kind, first.group) if w)
        return f"the operator is acting: {what} on {first.member}"
    for name, decision in sorted(plan.groups.items()):
        if decision.state not in STEADY_STATES:
            return f"group {name} is {decision.state}"
    return None


def decide(target: str, mode: str, members: Sequence[MemberAgent], moving: str | None,
           inflight: InFlight | None, failed: Mapping[str, str], now: float,
           timeout: float = UPGRADE_TIMEOUT_SECONDS) -> Decision:
    """The rollout's next step (see the module docstring). `moving`: why the cluster is
    not settled (`unsettled`), None when it is; `failed`: members whose upgrade to
    `target` failed in this process, with why. A member in flight is done or failed by
    the version sent to it (`inflight.version`: the target, unless an operator with
    another bundle recalled it)."""
    by_name = {m.name: m for m in members}
    if inflight is not None:
        sent = inflight.version
        m = by_name.get(inflight.member)
        late = now - inflight.since > timeout
        if m is not None and m.reachable and m.version == sent:
            missing = sorted(inflight.online - m.online)
            if not missing:
                return Decision(UPGRADED, m.name, "Upgraded",
                                f"{m.name} runs agent {sent} (was {inflight.previous})")
            if late:
                return Decision(FAILED, m.name, "UpgradeFailed",
                                f"{m.name} runs agent {sent} but group(s) "
                                f"{', '.join(missing)} did not come back Online there "
                                f"within {timeout:g} s")
            return Decision(WAIT, m.name, "Upgrading",
                            f"{m.name} runs agent {sent}; waiting for group(s) "
                            f"{', '.join(missing)} to be Online there again")
        if m is not None and m.reachable and m.rollback == sent:
            return Decision(FAILED, m.name, "UpgradeFailed", rolled_back(m, sent))
        if m is None or late:
            return Decision(FAILED, inflight.member, "UpgradeFailed",
                            f"{inflight.member}'s agent is not back with version {sent} "
                            f"within {timeout:g} s" if m is not None else
                            f"{inflight.member} left the cluster while upgrading")
        return Decision(WAIT, m.name, "Upgrading",
                        f"upgrading {m.name} from agent {inflight.previous} to {sent}")
    # a member whose agent never answered (its VM stopped, its guest booting) is not
    # counted: a guest that starts gets the operator's bundle injected, or is upgraded
    # once its agent answers with another version
    outdated = sorted((m for m in members if m.version is not None and m.version != target),
                      key=lambda m: (len(m.online), m.name))
    if not outdated:
        unknown = [m.name for m in members if m.version is None]
        return Decision(UP_TO_DATE, None, "UpToDate",
                        f"every member runs agent {target}" if not unknown else
                        f"every member whose agent answered runs agent {target} (not "
                        f"heard yet: {', '.join(unknown)})")
    names = ", ".join(f"{m.name} ({m.version or 'unknown'})" for m in outdated)
    why = {m.name: rolled_back(m, target) for m in outdated if m.rollback == target}
    why.update(failed)
    if why:
        return Decision(WAIT, None, "UpgradeFailed",
                        f"agent {target} failed on {', '.join(sorted(why))}, so the rollout "
                        f"stopped there: {'; '.join(why[n] for n in sorted(why))}. Not yet "
                        f"upgraded: {names}")
    if mode == UPGRADE_MANUAL:
        return Decision(WAIT, None, "Paused",
                        f"spec.agent.upgrade is Manual; not running agent {target}: {names}")
    silent = [m.name for m in members if not m.reachable or m.version is None]
    if silent:
        return Decision(WAIT, None, "MembersUnreachable",
                        f"waiting for every agent to answer (not: {', '.join(silent)}) "
                        f"before upgrading {names} to agent {target}")
    if moving is not None:
        return Decision(WAIT, None, "ClusterNotSettled",
                        f"waiting: {moving}; then upgrading {names} to agent {target}")
    first = outdated[0]
    return Decision(UPGRADE, first.name, "Upgrading",
                    f"upgrading {first.name} from agent {first.version} to {target}")


def rolled_back(member: MemberAgent, version: str) -> str:
    """Why `member`'s upgrade to `version` failed, when its agent rolled it back."""
    if member.rollback_reason:
        return f"{member.name}'s agent rolled agent {version} back: {member.rollback_reason}"
    return (f"{member.name}'s agent rolled agent {version} back: it did not come up; "
            f"{member.version} runs")


def condition(decision: Decision) -> tuple[bool, str, str]:
    """AgentsUpToDate as (status, reason, message)."""
    return decision.kind == UP_TO_DATE, decision.reason, decision.message


class EventSink(Protocol):
    def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None: ...


def member_agents(links: Mapping[str, MemberLink], names: Sequence[str]) -> list[MemberAgent]:
    """What the links say of each member's agent (a member without a link: silent)."""
    agents = []
    for name in names:
        link = links.get(name)
        report = link.state.report if link is not None else None
        if link is None or report is None:
            agents.append(MemberAgent(name, False, None))
            continue
        rollback = report.bundle.rollback if report.bundle is not None else None
        agents.append(MemberAgent(
            name, link.reachable, report.agent_version,
            rollback.version if rollback is not None else None,
            frozenset(g for g, state in link.state.groups.items() if state in (ONLINE, PARTIAL)),
            rollback.reason if rollback is not None else ""))
    return agents


class Rollout:
    """One cluster's rollout: the upgrade in flight, and carrying out `decide`."""

    def __init__(self, namespace: str, cluster: str, bundle: Callable[[], Bundle],
                 events: EventSink,
                 expect_restart: Callable[[str, float], None] | None = None,
                 slots: UpgradeSlots = SLOTS, wake: Callable[[], None] = lambda: None) -> None:
        """`expect_restart(member, within)`: told when a member's agent accepted a bundle
        (the cluster's EventFollower: it retries that member quickly meanwhile); `slots`:
        the operator's agent-upgrade slots, `wake`: a pass of this cluster, when a slot
        it waits for frees."""
        self.namespace, self.cluster = namespace, cluster
        self._key = f"{namespace}/{cluster}"
        self._slots, self._wake = slots, wake
        self._bundle = bundle
        self._events = events
        self._expect_restart = expect_restart
        self.inflight: InFlight | None = None
        self.failed: dict[str, dict[str, str]] = {}  # version -> member -> why
        self.last: Decision | None = None
        self._recalled = False  # leading, and status.agentUpgrade read since it leads

    def restarting(self, member: str) -> bool:
        """Whether `member`'s agent is restarting into a new bundle (its silence is
        expected: the engine allows it as a migration's)."""
        return self.inflight is not None and self.inflight.member == member

    def recall(self, status: Mapping[str, Any], leading: bool, now: float,
               wall: float) -> None:
        """The upgrade in flight as the InGuestCluster's status says (status.agentUpgrade;
        `now`, monotonic, and `wall`, time.time(), read together), so that it outlives the
        operator that started it. A process that does not lead follows the leader's
        record at every pass (its plans count the member as restarting too). One that
        leads reads it at its first pass as leader and from then on is its only writer:
        what it reads back later may be older than what it wrote. A record that cannot
        be read is logged and counts as none."""
        if leading and self._recalled:
            return
        self._recalled = leading
        try:
            record = AgentUpgrade.from_status(status)
        except ValueError as e:
            log.error("%s/%s: %s ignored: %s", self.namespace, self.cluster, STATUS_KEY, e)
            record = None
        if record is None:
            if self.inflight is not None:
                self._restarting(self.inflight.member, 0.0)
            self.inflight = None
            return
        if self.inflight is not None and self.inflight.record() == record:
            return
        self.inflight = InFlight.recalled(record, now, wall)
        log.info("%s/%s: upgrade of %s to agent %s in flight since %s (status.%s)",
                 self.namespace, self.cluster, record.member, record.version,
                 record.started_time, STATUS_KEY)
        self._restarting(record.member,
                         max(0.0, UPGRADE_TIMEOUT_SECONDS - (now - self.inflight.since)))

    def status(self) -> dict[str, Any]:
        """status.agentUpgrade as it should be (None removes it)."""
        return {STATUS_KEY: None if self.inflight is None
                else self.inflight.record().to_status()}

    async def step(self, mode: str, links: Mapping[str, MemberLink], names: Sequence[str],
                   plan: Plan, cluster_body: Mapping[str, Any], now: float) -> Decision:
        """One pass of the rollout (only the leader calls it). A member found done (or
        failed) lets the next one start in the same pass: the plan is as settled as it
        was."""
        decision = await self._step(mode, links, names, plan, cluster_body, now)
        if decision.kind in (UPGRADED, FAILED):
            decision = await self._step(mode, links, names, plan, cluster_body, now)
        self.last = decision
        return decision

    async def _step(self, mode: str, links: Mapping[str, MemberLink], names: Sequence[str],
                    plan: Plan, cluster_body: Mapping[str, Any], now: float) -> Decision:
        bundle = self._bundle()
        target = bundle.version
        agents = member_agents(links, names)
        failed = self.failed.setdefault(target, {})
        if self.inflight is not None:
            self._slots.hold(self._key)  # recalled after a restart too: seen through
        decision = decide(target, mode, agents, unsettled(plan), self.inflight, failed, now)
        if decision.kind == UPGRADED:
            assert self.inflight is not None
            took = now - self.inflight.since
            log.info("%s/%s: %s (%.1f s)", self.namespace, self.cluster, decision.message, took)
            self._events.event(cluster_body, "Normal", AGENT_UPGRADED,
                               f"{decision.message} in {took:.1f} s")
            self._restarting(self.inflight.member, 0.0)
            self.inflight = None
        elif decision.kind == FAILED and decision.member is not None:
            assert self.inflight is not None
            log.warning("%s/%s: %s", self.namespace, self.cluster, decision.message)
            self._events.event(cluster_body, "Warning", AGENT_UPGRADE_FAILED, decision.message)
            self.failed.setdefault(self.inflight.version, {})[decision.member] = \
                decision.message
            self._restarting(decision.member, 0.0)
            self.inflight = None
        elif decision.kind == UPGRADE and decision.member is not None:
            if not self._slots.ask(self._key, now, self._wake):
                return Decision(WAIT, None, "Queued",
                                f"waiting for an agent-upgrade slot ({len(self._slots.holders)}"
                                f" of at most {self._slots.limit} clusters upgrading, "
                                f"{self._slots.ahead(self._key)} ahead in line); then "
                                f"{decision.message}")
            await self._send(decision.member, links[decision.member], bundle, agents,
                             failed, cluster_body, now)
        if self.inflight is None:
            self._slots.release(self._key)  # done, failed, refused, or not ready
        return decision

    def close(self) -> None:
        """The cluster's supervisor ends: its slot, or its place in line, goes."""
        self._slots.release(self._key)

    async def _send(self, member: str, link: MemberLink, bundle: Bundle,
                    agents: Sequence[MemberAgent], failed: dict[str, str],
                    cluster_body: Mapping[str, Any], now: float) -> None:
        agent = next(a for a in agents if a.name == member)
        log.info("%s/%s: upgrading %s from agent %s to %s", self.namespace, self.cluster,
                 member, agent.version, bundle.version)
        try:
            answer = await link.commands.put_bundle(BundleUpload.of(bundle.data,
                                                                    bundle.version))
        except AgentRefusal as e:
            why = f"{member} refused agent {bundle.version}: {e}"
            log.warning("%s/%s: %s", self.namespace, self.cluster, why)
            self._events.event(cluster_body, "Warning", AGENT_UPGRADE_FAILED, why)
            failed[member] = why
            return
        except ChannelError as e:
            # Not sent, or sent and its answer lost in the restart: counted as in flight
            # either way (its silence allowed), so it comes back upgraded or the timeout
            # says it failed.
            log.warning("%s/%s: upgrading %s: %s", self.namespace, self.cluster, member, e)
            self.inflight = InFlight(member, now, agent.version or "unknown", agent.online,
                                     bundle.version, now_iso())
            self._restarting(member)
            return
        if answer.restarting:
            self.inflight = InFlight(member, now, answer.previous_version, agent.online,
                                     bundle.version, now_iso())
            self._restarting(member)

    def _restarting(self, member: str, within: float = UPGRADE_TIMEOUT_SECONDS) -> None:
        """Tells the follower how long `member`'s agent may be restarting (0: no more)."""
        if self._expect_restart is not None:
            self._expect_restart(member, within)
