"""An operator that restarts (or a replica that starts) over settled clusters writes and
announces nothing that did not happen (guestha.controller.publisher).

Found by hack/bench/operatorscale: after a restart, each cluster's first pass ran before
its followers had reached any agent, so every member was written Disconnected (and
Connected again a moment later), every group Unknown (and Online again), and each group
got a Warning FailoverStarted and a GroupOnline Event: with 500 clusters, some 2,000
status writes and 1,000 Events in seconds, and a failover counted in the metrics for
every group, where nothing had moved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest

from guestha.channel.aio import Member
from guestha.channel.follower import Contact
from guestha.controller import publisher as publisher_module
from guestha.controller.links import MemberLink
from guestha.controller.observe import GroupFacts
from guestha.controller.publisher import Publisher
from guestha.engine import GroupDecision, Plan
from guestha.model.members import MemberPhase, MemberView
from guestha.protocol.keys import CLUSTER_KEY
from guestha.protocol.states import IDLE
from guestha.protocol.status import (
    EventCursor,
    GroupStatus,
    HeartbeatStatus,
    QuorumStatus,
    SelfFenceStatus,
    StatusReport,
    WatchdogStatus,
)

pytestmark = pytest.mark.unit

MEMBERS = ("web-a", "web-b")
SPEC = {"cluster": "web", "type": "Failover",
        "systems": [{"member": m} for m in MEMBERS], "resources": []}
UNKNOWN = GroupDecision("Unknown", (), None, "", "")
ONLINE_A = GroupDecision("Online", ("web-a",), None, "", "")


class Writes:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[str] = []

    async def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        self.statuses.append((plural, name, dict(status)))

    def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append(reason)

    async def endpoints(self, group: Mapping[str, Any], addresses: Mapping[str, str]) -> None:
        pass


def address(member: str) -> str:
    return f"10.0.0.{MEMBERS.index(member) + 1}"


def link(member: str) -> MemberLink:
    return MemberLink("ns", "web", Member("ns", member, 7480, address(member)), "uid",
                      lambda: None)  # type: ignore[arg-type,return-value]


def answered(made: MemberLink, state: str) -> None:
    """The follower's first answer from the agent: its status report, then the contact."""
    now = "2026-01-01T00:00:00Z"
    made.on_report(StatusReport(
        "web", made.member, "1", 1, made.member, 1.0, 1, None,
        {"shop": GroupStatus(state, "Failover")}, None, (),
        QuorumStatus(3, 3, True, 0, True, now, now, MEMBERS, ()),
        SelfFenceStatus(IDLE, "quorum", now, None, 0.0),
        WatchdogStatus(None, False, 0, False, None, None, 10.0),
        EventCursor("s", 1), HeartbeatStatus(500, 3000, CLUSTER_KEY, {}), {}))
    made.on_contact(Contact(True, 0.0))


VIEWS = [MemberView(m, MemberPhase.RUNNING, address(m)) for m in MEMBERS]


class Api:
    """The two objects as the API holds them: each write replaces their status."""

    def __init__(self) -> None:
        self.cluster: dict[str, Any] = {}
        self.group: dict[str, Any] = {}

    def one_pass(self, publisher: Publisher, decision: GroupDecision,
                 links: Mapping[str, MemberLink], now: float) -> None:
        facts = GroupFacts("shop", SPEC, self.group, {}, generation=1)
        body = {"metadata": {"name": "shop", "generation": 1}, "spec": SPEC,
                "status": self.group}
        cluster = {"metadata": {"generation": 1}, "status": self.cluster}
        writer = publisher.writer
        assert isinstance(writer, Writes)
        before = len(writer.statuses)
        asyncio.run(publisher.publish(Plan(groups={"shop": decision}), VIEWS, cluster,
                                      [facts], {"shop": body}, {}, links, 1, now))
        for plural, _, status in writer.statuses[before:]:
            if plural == "inguestclusters":
                self.cluster = status
            else:
                self.group = status


def settled() -> Api:
    """A cluster an earlier process published: both agents Connected, the group Online
    on web-a."""
    api = Api()
    links = {m: link(m) for m in MEMBERS}
    for m in MEMBERS:
        answered(links[m], "Online" if m == "web-a" else "Offline")
    api.one_pass(Publisher("ns", "web", Writes()), ONLINE_A, links, 50.0)
    assert api.group["state"] == "Online" and [
        m["agent"] for m in api.cluster["members"]] == ["Connected"] * 2
    return api


def test_a_new_process_writes_nothing_before_its_agents_first_answer() -> None:
    api, writer = settled(), Writes()
    publisher = Publisher("ns", "web", writer)
    links = {m: link(m) for m in MEMBERS}
    api.one_pass(publisher, UNKNOWN, links, time.monotonic())  # no agent reached yet
    assert writer.statuses == [] and writer.events == []


def test_a_new_process_announces_no_failover_and_no_online_where_nothing_moved() -> None:
    api, writer = settled(), Writes()
    publisher = Publisher("ns", "web", writer)
    links = {m: link(m) for m in MEMBERS}
    api.one_pass(publisher, UNKNOWN, links, time.monotonic())
    for m in MEMBERS:
        answered(links[m], "Online" if m == "web-a" else "Offline")
    api.one_pass(publisher, ONLINE_A, links, time.monotonic())
    assert writer.events == []
    assert writer.statuses == []


def test_an_agent_that_never_answers_is_published_after_the_bound() -> None:
    """The wait for first answers is bounded: a member whose follower reports nothing
    (not even a failure) does not hold the cluster's status back for ever."""
    api, writer = settled(), Writes()
    publisher = Publisher("ns", "web", writer)
    links = {m: link(m) for m in MEMBERS}
    start = max(made.created for made in links.values())
    api.one_pass(publisher, UNKNOWN, links, start + publisher_module.FIRST_ANSWER_SECONDS)
    assert [m["agent"] for m in api.cluster["members"]] == ["Disconnected"] * 2


def test_a_process_that_has_published_once_writes_a_lost_agent_at_once() -> None:
    api, writer = settled(), Writes()
    publisher = Publisher("ns", "web", writer)
    links = {m: link(m) for m in MEMBERS}
    for m in MEMBERS:
        answered(links[m], "Online" if m == "web-a" else "Offline")
    api.one_pass(publisher, ONLINE_A, links, time.monotonic())
    links["web-b"] = link("web-b")  # a new run of web-b's guest: not reached yet
    api.one_pass(publisher, ONLINE_A, links, time.monotonic())
    assert [m["agent"] for m in api.cluster["members"]] == ["Connected", "Disconnected"]
