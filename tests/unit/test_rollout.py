"""The agent rollout's decision (controller.rollout.decide) as tables: which member is
upgraded next, when it waits, when a member's upgrade is done or failed; and what counts
as a cluster settled enough to restart an agent in."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from guestha.channel.aio import Contact, Member
from guestha.cloudinit import bundle
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
from guestha.engine import Action, GroupDecision, Plan
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


SENT = InFlight("a", NOW - 5, OLD, WEB)


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

