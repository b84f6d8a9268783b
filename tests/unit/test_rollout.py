"""The agent rollout's decision (controller.rollout.decide) as tables: which member is
upgraded next, when it waits, when a member's upgrade is done or failed; and what counts
as a cluster settled enough to restart an agent in."""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from guestha.channel.aio import Contact, Member
from guestha.cloudinit import bundle
from guestha.controller import upgradeslots
from guestha.controller.links import MemberLink
from guestha.controller.rollout import (
    FAILED,
    UP_TO_DATE,
    UPGRADE,
    UPGRADE_TIMEOUT_SECONDS,
    UPGRADED,
    WAIT,
    Decision,
    InFlight,
    MemberAgent,
    Rollout,
    condition,
    decide,
    unsettled,
)
from guestha.controller.upgradeslots import STALE_SECONDS, UpgradeSlots
from guestha.engine import Action, GroupDecision, Plan
from guestha.model.agentupgrade import AgentUpgrade
from guestha.model.cluster import UPGRADE_AUTOMATIC, UPGRADE_MANUAL
from guestha.protocol.bundle import BundleInstalled, BundleStatus, BundleUpload, Rollback

pytestmark = pytest.mark.unit

NEW, OLD = "v2", "v1"
NOW = 1000.0
WEB = frozenset({"web"})


def m(name: str, version: str | None = OLD, reachable: bool = True,
      online: frozenset[str] = frozenset(), rollback: str | None = None) -> MemberAgent:
    return MemberAgent(name, reachable, version, rollback, online)


def run(members: list[MemberAgent], inflight: InFlight | None = None,
        mode: str = UPGRADE_AUTOMATIC, moving: str | None = None,
        failed: dict[str, str] | None = None, now: float = NOW) -> Decision:
    return decide(NEW, mode, members, moving, inflight, failed or {}, now)


@pytest.mark.parametrize(("members", "kind", "member", "reason"), [
    # every member runs the operator's version
    ([m("a", NEW), m("b", NEW), m("c", NEW)], UP_TO_DATE, None, "UpToDate"),
    # members running the fewest groups first, then by name
    ([m("a", online=WEB), m("b"), m("c", NEW)], UPGRADE, "b", "Upgrading"),
    ([m("c", online=WEB), m("a", online=WEB), m("b", NEW)], UPGRADE, "a", "Upgrading"),
    ([m("a", online=WEB | {"db"}), m("b", online=WEB), m("c", online=WEB)], UPGRADE, "b",
     "Upgrading"),
    # all members must answer, whatever their version
    ([m("a"), m("b", NEW, reachable=False), m("c", NEW)], WAIT, None, "MembersUnreachable"),
    ([m("a"), m("b", None, reachable=False)], WAIT, None, "MembersUnreachable"),
    # a member never heard (its VM stopped) is not counted as outdated
    ([m("a", NEW), m("b", None, reachable=False)], UP_TO_DATE, None, "UpToDate"),
    # a member that rolled this version back stops the rollout
    ([m("a", NEW), m("b", rollback=NEW), m("c")], WAIT, None, "UpgradeFailed"),
    # a rollback of another version does not
    ([m("a", NEW), m("b", rollback="v0"), m("c", NEW)], UPGRADE, "b", "Upgrading"),
])
def test_which_member_next(members: list[MemberAgent], kind: str, member: str | None,
                           reason: str) -> None:
    decision = run(members)
    assert (decision.kind, decision.member, decision.reason) == (kind, member, reason), \
        decision.message


def test_nothing_starts_while_the_cluster_moves_or_when_paused() -> None:
    members = [m("a"), m("b", NEW)]
    moving = run(members, moving="group web is Starting")
    assert (moving.kind, moving.reason) == (WAIT, "ClusterNotSettled")
    assert "group web is Starting" in moving.message
    paused = run(members, mode=UPGRADE_MANUAL)
    assert (paused.kind, paused.reason) == (WAIT, "Paused") and "a (v1)" in paused.message
    failed = run(members, failed={"b": "refused"})
    assert (failed.kind, failed.reason) == (WAIT, "UpgradeFailed")
    assert run([m("a", NEW)], mode=UPGRADE_MANUAL).kind == UP_TO_DATE


SENT = InFlight("a", NOW - 5, OLD, WEB, NEW, "2026-11-30T10:00:00Z")


@pytest.mark.parametrize(("member", "now", "kind", "reason"), [
    # restarting: silent, or still the old run answering (it restarts 0.2 s after)
    (m("a", OLD, reachable=False, online=WEB), NOW, WAIT, "Upgrading"),
    (m("a", OLD, online=WEB), NOW, WAIT, "Upgrading"),
    # back with the new version, the group Online where it was: done
    (m("a", NEW, online=WEB), NOW, UPGRADED, "Upgraded"),
    (m("a", NEW, online=WEB | {"other"}), NOW, UPGRADED, "Upgraded"),
    # back, the group not Online yet (probing): wait, then fail past the timeout
    (m("a", NEW), NOW, WAIT, "Upgrading"),
    (m("a", NEW), NOW + UPGRADE_TIMEOUT_SECONDS, FAILED, "UpgradeFailed"),
    # the new version rolled back by the agent
    (m("a", OLD, online=WEB, rollback=NEW), NOW, FAILED, "UpgradeFailed"),
    # not back in time
    (m("a", OLD, reachable=False), NOW + UPGRADE_TIMEOUT_SECONDS, FAILED, "UpgradeFailed"),
    # a silent member back with the new version but still silent: not done
    (m("a", NEW, reachable=False, online=WEB), NOW, WAIT, "Upgrading"),
])
def test_a_member_in_flight(member: MemberAgent, now: float, kind: str, reason: str) -> None:
    decision = run([member, m("b"), m("c")], SENT, now=now)
    assert (decision.kind, decision.member, decision.reason) == (kind, "a", reason), \
        decision.message


def test_one_member_at_a_time() -> None:
    """While one member upgrades nothing else starts, even when it is paused meanwhile or
    others are outdated; its end (done or failed) is what the next pass hears of."""
    members = [m("a", reachable=False), m("b"), m("c")]
    assert run(members, SENT).kind == WAIT
    assert run(members, SENT, mode=UPGRADE_MANUAL).kind == WAIT
    assert run(members, SENT, moving="group web is Unknown").kind == WAIT
    gone = run([m("b"), m("c")], SENT)
    assert (gone.kind, gone.member) == (FAILED, "a") and "left the cluster" in gone.message


def test_condition() -> None:
    assert condition(run([m("a", NEW)])) == (True, "UpToDate", "every member runs agent v2")
    status, reason, _ = condition(run([m("a")]))
    assert (status, reason) == (False, "Upgrading")


def test_unsettled() -> None:
    steady = {"web": GroupDecision("Online", ("a",), None, "", ""),
              "db": GroupDecision("Offline", (), None, "", ""),
              "bad": GroupDecision("Faulted", (), None, "", "")}
    assert unsettled(Plan(groups=steady)) is None
    for state in ("Starting", "Stopping", "Switching", "Unknown"):
        plan = Plan(groups={**steady, "web": GroupDecision(state, (), None, "", "")})
        assert unsettled(plan) == f"group web is {state}"
    acting = Plan(actions=(Action("online", "b", "web", "AutoStart", ""),), groups=steady)
    assert unsettled(acting) == "the operator is acting: online web on b"


# -- carrying it out (controller.rollout.Rollout), with scripted agents


class ScriptedAgent:
    """Answers PUT /v1/bundle as an agent that restarts into it."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.sent: list[str] = []

    async def put_bundle(self, upload: BundleUpload) -> BundleInstalled:
        self.sent.append(upload.version)
        return BundleInstalled("op", 1, upload.version, self.version, True)

    async def aclose(self) -> None:
        pass


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def event(self, body: Any, kind: str, reason: str, message: str) -> None:
        self.seen.append((reason, message))


def scripted_link(name: str, agent: ScriptedAgent, groups: dict[str, str]) -> MemberLink:
    link = MemberLink("ns", "web", Member("ns", name, 7480, "10.0.0.1"), "uid",
                      lambda: agent)
    link.contact = Contact(True, 0.0)
    link.state.report = SimpleNamespace(agent_version=agent.version,  # type: ignore[assignment]
                                        bundle=None)
    link.state.groups = dict(groups)
    return link


def test_the_rollout_sends_one_bundle_at_a_time_and_goes_on_in_the_same_pass() -> None:
    new = bundle.build(version=NEW)
    agents = {n: ScriptedAgent(OLD) for n in ("a", "b")}
    links = {"a": scripted_link("a", agents["a"], {"web": "Online"}),
             "b": scripted_link("b", agents["b"], {})}
    events = Events()
    expected: list[tuple[str, float]] = []
    rollout = Rollout("ns", "web", lambda: new, events,
                      lambda member, within: expected.append((member, within)))
    settled = Plan(groups={"web": GroupDecision("Online", ("a",), None, "", "")})

    def step(now: float) -> Decision:
        return asyncio.run(rollout.step(UPGRADE_AUTOMATIC, links, ["a", "b"], settled, {},
                                        now))

    first = step(NOW)
    assert (first.kind, first.member) == (UPGRADE, "b")  # the one without groups first
    assert agents["b"].sent == [NEW] and rollout.restarting("b")
    assert expected == [("b", UPGRADE_TIMEOUT_SECONDS)]  # the follower retries b quickly
    assert not rollout.restarting("a")
    links["b"].contact = Contact(False, 0.0)  # restarting
    assert step(NOW + 1).kind == WAIT and agents["a"].sent == []
    # b is back with the new version: done, and a starts in the same pass
    links["b"].contact = Contact(True, NOW + 2)
    agents["b"].version = NEW
    links["b"].state.report = SimpleNamespace(agent_version=NEW,  # type: ignore[assignment]
                                              bundle=None)
    second = step(NOW + 2)
    assert (second.kind, second.member) == (UPGRADE, "a") and agents["a"].sent == [NEW]
    assert [r for r, _ in events.seen] == ["AgentUpgraded"]
    assert expected[1:] == [("b", 0.0), ("a", UPGRADE_TIMEOUT_SECONDS)]
    # a comes back without its group Online: not done until it is
    links["a"].state.report = SimpleNamespace(agent_version=NEW,  # type: ignore[assignment]
                                              bundle=None)
    links["a"].state.groups = {"web": "Unknown"}
    assert step(NOW + 3).kind == WAIT
    links["a"].state.groups = {"web": "Online"}
    assert step(NOW + 4).kind == UP_TO_DATE
    assert [r for r, _ in events.seen] == ["AgentUpgraded", "AgentUpgraded"]
    assert not rollout.restarting("a")


def test_a_rolled_back_member_stops_the_rollout() -> None:
    new = bundle.build(version=NEW)
    agents = {n: ScriptedAgent(OLD) for n in ("a", "b")}
    links = {n: scripted_link(n, agents[n], {}) for n in ("a", "b")}
    events = Events()
    rollout = Rollout("ns", "web", lambda: new, events)

    def step(now: float) -> Decision:
        return asyncio.run(rollout.step(UPGRADE_AUTOMATIC, links, ["a", "b"], Plan(), {},
                                        now))

    assert step(NOW).member == "a"
    rolled_back = BundleStatus("/usr/local/lib/guestha/guestha-agent.pyz",
                               Rollback(NEW, "did not come up", "2026-11-30T00:00:00Z"))
    links["a"].state.report = SimpleNamespace(agent_version=OLD,  # type: ignore[assignment]
                                              bundle=rolled_back)
    stopped = step(NOW + 5)
    assert (stopped.kind, stopped.reason) == (WAIT, "UpgradeFailed"), stopped
    assert [r for r, _ in events.seen] == ["AgentUpgradeFailed"]
    assert agents["b"].sent == [] and step(NOW + 6).reason == "UpgradeFailed"
    # the condition says why, in the agent's words
    assert "a's agent rolled agent v2 back: did not come up" in stopped.message, stopped


# -- the upgrade in flight outlives the operator (status.agentUpgrade)

WALL = 1_800_000_000.0  # time.time() at NOW


def record_at(seconds_before: float, member: str = "a", version: str = NEW,
              groups: tuple[str, ...] = ("web",)) -> dict[str, Any]:
    """status.agentUpgrade of a bundle accepted `seconds_before` WALL."""
    at = datetime.datetime.fromtimestamp(WALL - seconds_before, datetime.UTC)
    return {"agentUpgrade": AgentUpgrade(member, version, OLD,
                                         at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                         groups).to_status()}


@pytest.mark.parametrize(("raw", "error"), [
    ({"member": "a", "version": "v2", "previousVersion": "v1"},
     "status.agentUpgrade.startedTime: required"),
    ({"member": "a", "version": "v2", "previousVersion": "v1", "startedTime": "yesterday"},
     "status.agentUpgrade.startedTime: not an RFC 3339 time"),
    ({"member": "a", "version": "v2", "previousVersion": "v1",
      "startedTime": "2026-11-30T10:00:00"}, "status.agentUpgrade.startedTime: an RFC 3339"),
    ({"version": "v2", "previousVersion": "v1", "startedTime": "2026-11-30T10:00:00Z"},
     "status.agentUpgrade.member: required"),
    ({"member": "a", "version": "v2", "previousVersion": "v1",
      "startedTime": "2026-11-30T10:00:00Z", "groups": [1]}, "status.agentUpgrade.groups[0]"),
    ("a", "status.agentUpgrade: must be an object"),
])
def test_a_bad_record_is_refused_naming_the_field(raw: Any, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        AgentUpgrade.from_status({"agentUpgrade": raw})


def test_the_record_round_trips() -> None:
    record = AgentUpgrade("a", NEW, OLD, "2026-11-30T10:00:00Z", ("db", "web"))
    assert AgentUpgrade.from_status({"agentUpgrade": record.to_status()}) == record
    assert AgentUpgrade.from_status({}) is None
    sent = InFlight("a", NOW, OLD, WEB, NEW, "2026-11-30T10:00:00Z")
    assert InFlight.recalled(sent.record(), NOW, WALL).record() == sent.record()


@pytest.mark.parametrize(("seconds_before", "since"), [
    (0.0, NOW), (30.0, NOW - 30), (UPGRADE_TIMEOUT_SECONDS + 1, NOW - 121),
    (-60.0, NOW),  # a startedTime ahead of this host's clock: just started, not later
])
def test_a_recalled_upgrade_keeps_its_age(seconds_before: float, since: float) -> None:
    record = AgentUpgrade.from_status(record_at(seconds_before))
    assert record is not None
    assert InFlight.recalled(record, NOW, WALL).since == since


@pytest.mark.parametrize(("seconds_before", "member", "kind", "reason"), [
    # the new operator starts while the member restarts: silent, not late: wait for it
    (10.0, m("a", OLD, reachable=False), WAIT, "Upgrading"),
    # its timeout goes on from startedTime, not from the new process's start
    (UPGRADE_TIMEOUT_SECONDS + 1, m("a", OLD, reachable=False), FAILED, "UpgradeFailed"),
    # back with the version sent, its group Online again: done
    (10.0, m("a", NEW, online=WEB), UPGRADED, "Upgraded"),
    # rolled back meanwhile
    (10.0, m("a", OLD, online=WEB, rollback=NEW), FAILED, "UpgradeFailed"),
])
def test_the_decision_with_a_recalled_upgrade(seconds_before: float, member: MemberAgent,
                                              kind: str, reason: str) -> None:
    record = AgentUpgrade.from_status(record_at(seconds_before))
    assert record is not None
    inflight = InFlight.recalled(record, NOW, WALL)
    decision = run([member, m("b"), m("c")], inflight)
    assert (decision.kind, decision.member, decision.reason) == (kind, "a", reason), \
        decision.message


def test_an_upgrade_of_another_version_is_seen_through_by_its_own() -> None:
    """An operator restarted with yet another bundle (v3) recalls the member upgrading
    to v2: back with v2 it is done (not failed for not running v3), then upgraded on."""
    record = AgentUpgrade.from_status(record_at(10.0))
    assert record is not None
    inflight = InFlight.recalled(record, NOW, WALL)
    back = decide("v3", UPGRADE_AUTOMATIC, [m("a", NEW, online=WEB), m("b", "v3")], None,
                  inflight, {}, NOW)
    assert (back.kind, back.member) == (UPGRADED, "a"), back.message
    rolled = decide("v3", UPGRADE_AUTOMATIC, [m("a", OLD, rollback=NEW), m("b", "v3")],
                    None, inflight, {}, NOW)
    assert (rolled.kind, rolled.member) == (FAILED, "a"), rolled.message
    assert decide("v3", UPGRADE_AUTOMATIC, [m("a", OLD, rollback=NEW), m("b", "v3")],
                  None, None, {}, NOW).kind == UPGRADE  # v2's failure does not stop v3


def test_a_restarted_operator_recalls_the_upgrade_and_goes_on_one_at_a_time() -> None:
    """The process that sent the bundle is gone; the next one reads status.agentUpgrade:
    the member is restarting (the engine allows its silence), nothing else is sent until
    it is back, and then the next member goes in the same pass; the record is removed."""
    new = bundle.build(version=NEW)
    agents = {n: ScriptedAgent(OLD) for n in ("a", "b")}
    links = {"a": scripted_link("a", agents["a"], {"web": "Online"}),
             "b": scripted_link("b", agents["b"], {})}
    links["b"].contact = Contact(False, 0.0)  # restarting into v2, silent
    expected: list[tuple[str, float]] = []
    events = Events()
    rollout = Rollout("ns", "web", lambda: new, events,
                      lambda member, within: expected.append((member, within)))
    status = record_at(30.0, "b", groups=())
    rollout.recall(status, True, NOW, WALL)
    assert rollout.restarting("b") and not rollout.restarting("a")
    assert expected == [("b", UPGRADE_TIMEOUT_SECONDS - 30)]  # what is left of its time
    assert rollout.status() == status  # written back as it was: no write

    def step(now: float) -> Decision:
        return asyncio.run(rollout.step(UPGRADE_AUTOMATIC, links, ["a", "b"], Plan(), {},
                                        now))

    assert step(NOW + 1).kind == WAIT and agents["a"].sent == agents["b"].sent == []
    # what the leader reads back later is its own older write: not read again
    rollout.recall({}, True, NOW + 1, WALL + 1)
    assert rollout.restarting("b")
    links["b"].contact = Contact(True, NOW + 2)
    links["b"].state.report = SimpleNamespace(agent_version=NEW,  # type: ignore[assignment]
                                              bundle=None)
    going_on = step(NOW + 2)
    assert (going_on.kind, going_on.member) == (UPGRADE, "a") and agents["a"].sent == [NEW]
    assert [r for r, _ in events.seen] == ["AgentUpgraded"]
    written = rollout.status()["agentUpgrade"]
    assert (written["member"], written["version"], written["groups"]) == ("a", NEW, ["web"])


def test_a_standby_follows_the_leaders_record() -> None:
    """A process that does not lead follows status.agentUpgrade at every pass (its plans
    count the member as restarting), and reads it afresh when it comes to lead."""
    rollout = Rollout("ns", "web", lambda: bundle.build(version=NEW), Events())
    rollout.recall(record_at(5.0, "b"), False, NOW, WALL)
    assert rollout.restarting("b")
    rollout.recall({}, False, NOW + 1, WALL + 1)  # the leader found it done
    assert not rollout.restarting("b") and rollout.status() == {"agentUpgrade": None}
    rollout.recall(record_at(5.0, "c"), False, NOW + 2, WALL + 2)
    rollout.recall(record_at(5.0, "c"), True, NOW + 3, WALL + 3)  # leads now
    assert rollout.restarting("c")
    rollout.recall({"agentUpgrade": {"member": "c"}}, False, NOW + 4, WALL + 4)
    assert rollout.inflight is None  # a record it cannot read counts as none (logged)


# -- across clusters: the operator's agent-upgrade slots (controller.upgradeslots)


def test_slots_first_come_first_served_within_the_limit() -> None:
    slots = UpgradeSlots(limit=2)
    woken: list[str] = []

    def wake(key: str) -> Callable[[], None]:
        return lambda: woken.append(key)

    assert slots.ask("ns/a", 1.0, wake("ns/a")) and slots.ask("ns/b", 2.0, wake("ns/b"))
    assert not slots.ask("ns/c", 3.0, wake("ns/c"))
    assert not slots.ask("ns/d", 4.0, wake("ns/d"))
    assert not slots.ask("ns/c", 5.0, wake("ns/c"))  # asking again keeps its place
    assert (slots.ahead("ns/c"), slots.ahead("ns/d")) == (0, 1)
    slots.release("ns/a")
    assert woken == ["ns/c"]  # the first in line, not the one that asked last
    assert not slots.ask("ns/d", 6.0, wake("ns/d"))  # d cannot jump the line
    assert slots.ask("ns/c", 6.0, wake("ns/c")) and slots.holders == {"ns/b", "ns/c"}
    # a cluster that is no longer ready leaves the line and holds up no one
    slots.release("ns/d")
    assert slots.queue == {}


def test_slots_an_upgrade_in_flight_holds_one_past_the_limit() -> None:
    slots = UpgradeSlots(limit=1)
    slots.hold("ns/recalled-1")
    slots.hold("ns/recalled-2")  # an operator recalled two after a restart: both go on
    assert not slots.ask("ns/new", 1.0, lambda: None)
    slots.release("ns/recalled-1")
    assert not slots.ask("ns/new", 2.0, lambda: None)  # still one held of one
    slots.release("ns/recalled-2")
    assert slots.ask("ns/new", 3.0, lambda: None)


def test_slots_a_waiter_gone_silent_is_dropped() -> None:
    slots = UpgradeSlots(limit=1)
    slots.hold("ns/busy")
    assert not slots.ask("ns/gone", 0.0, lambda: None)
    assert not slots.ask("ns/next", STALE_SECONDS + 1, lambda: None)
    assert list(slots.queue) == ["ns/next"]


def test_slots_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--max-agent-upgrades must be at least 1"):
        upgradeslots.configure(0)


def test_clusters_wait_in_line_for_a_slot() -> None:
    """Two clusters ready to upgrade an agent, one slot: the second waits (Queued, and
    says why), is woken when the first's member is done, then sends its bundle."""
    new = bundle.build(version=NEW)
    slots = UpgradeSlots(limit=1)
    woken: list[str] = []
    clusters = {}
    for name in ("one", "two"):
        agents = {"a": ScriptedAgent(OLD)}
        links = {"a": scripted_link("a", agents["a"], {})}
        rollout = Rollout("ns", name, lambda: new, Events(), slots=slots,
                          wake=lambda name=name: woken.append(name))  # type: ignore[misc]
        clusters[name] = (rollout, agents, links)

    def step(name: str, now: float) -> Decision:
        rollout, _, links = clusters[name]
        return asyncio.run(rollout.step(UPGRADE_AUTOMATIC, links, ["a"], Plan(), {}, now))

    assert step("one", NOW).kind == UPGRADE
    queued = step("two", NOW)
    assert (queued.kind, queued.reason) == (WAIT, "Queued")
    assert "1 of at most 1 clusters upgrading" in queued.message
    assert "upgrading a from agent v1 to v2" in queued.message
    assert clusters["two"][1]["a"].sent == []
    assert condition(queued) == (False, "Queued", queued.message)
    # cluster one's member comes back with the new version: its slot goes to two
    links_one = clusters["one"][2]
    links_one["a"].state.report = SimpleNamespace(agent_version=NEW,  # type: ignore[assignment]
                                                  bundle=None)
    assert step("one", NOW + 1).kind == UP_TO_DATE
    assert woken == ["two"]
    assert step("two", NOW + 2).kind == UPGRADE and clusters["two"][1]["a"].sent == [NEW]
    # a supervisor that ends gives its slot back
    clusters["two"][0].close()
    assert slots.holders == set()
