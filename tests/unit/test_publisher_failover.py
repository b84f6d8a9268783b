"""A failover is counted in the ServiceGroup's status (failovers, lastFailover) by
whichever operator process finishes it (guestha.controller.publisher), including one
that starts (a restart, the other replica taking over) while the group is away from
the member it was last Online on: that member is read from the status as written."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from guestha.controller.observe import GroupFacts
from guestha.controller.publisher import Publisher
from guestha.engine import GroupDecision, Plan

pytestmark = pytest.mark.unit

SPEC = {"cluster": "web", "type": "Failover",
        "systems": [{"member": "web-a"}, {"member": "web-b"}], "resources": []}


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


def passes(publisher: Publisher, status: dict[str, Any],
           decisions: list[GroupDecision]) -> dict[str, Any]:
    """Publish one pass per decision, each reading the status the one before wrote."""
    writer = publisher.writer
    assert isinstance(writer, Writes)
    for i, decision in enumerate(decisions):
        facts = GroupFacts("shop", SPEC, status, {}, generation=1)
        body = {"metadata": {"name": "shop", "generation": 1}, "spec": SPEC, "status": status}
        plan = Plan(groups={"shop": decision})
        asyncio.run(publisher.publish(plan, [], {"metadata": {}}, [facts], {"shop": body},
                                      {}, {}, 1, float(i)))
        written = [s for p, n, s in writer.statuses if p == "servicegroups"]
        if written:
            status = written[-1]
    return status


ONLINE_A = GroupDecision("Online", ("web-a",), None, "", "")
AWAY = GroupDecision("Faulted", (), "web-b", "", "")
ONLINE_B = GroupDecision("Online", ("web-b",), None, "", "")


def test_a_failover_seen_whole_by_one_process_is_counted() -> None:
    status = passes(Publisher("ns", "web", Writes()), {"failovers": 2},
                    [ONLINE_A, AWAY, ONLINE_B])
    assert status["failovers"] == 3
    assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == ("web-a", "web-b")


def test_a_failover_finished_by_a_new_process_is_counted() -> None:
    """The process that saw the group Online on web-a is gone (killed mid-failover);
    the status it wrote says so. The next one finishes the failover and counts it."""
    before = {"state": "Online", "onlineOn": ["web-a"], "failovers": 2}
    writer = Writes()
    status = passes(Publisher("ns", "web", writer), before, [AWAY, ONLINE_B])
    assert status["failovers"] == 3
    assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == ("web-a", "web-b")
    assert "FailedOver" in writer.events


def test_a_new_process_finding_the_group_where_it_was_counts_nothing() -> None:
    before = {"state": "Online", "onlineOn": ["web-a"], "failovers": 2}
    status = passes(Publisher("ns", "web", Writes()), before, [ONLINE_A])
    assert status.get("failovers", 2) == 2 and "lastFailover" not in status


def cause_of_failover(phases: list[str]) -> str:
    """The lastFailover reason after the passes ONLINE_A, AWAY, ONLINE_B while web-a's
    agent stream still counts as reachable and KubeVirt shows web-a's VMI in `phases`
    (one per pass)."""
    from guestha.channel.aio import Member
    from guestha.channel.follower import Contact
    from guestha.controller.links import MemberLink
    from guestha.model.members import MemberPhase, MemberView

    link = MemberLink("ns", "web", Member("ns", "web-a", 7480, "10.0.0.1"), "uid",
                      lambda: None)
    link.contact = Contact(True, 0.0)
    writer = Writes()
    publisher = Publisher("ns", "web", writer)
    status: dict[str, Any] = {}
    for i, (decision, phase) in enumerate(zip([ONLINE_A, AWAY, ONLINE_B], phases, strict=True)):
        facts = GroupFacts("shop", SPEC, status, {}, generation=1)
        body = {"metadata": {"name": "shop", "generation": 1}, "spec": SPEC, "status": status}
        views = [MemberView("web-a", MemberPhase(phase)),
                 MemberView("web-b", MemberPhase.RUNNING)]
        asyncio.run(publisher.publish(Plan(groups={"shop": decision}), views,
                                      {"metadata": {}}, [facts], {"shop": body}, {},
                                      {"web-a": link}, 1, float(i)))
        status = [s for p, n, s in writer.statuses if p == "servicegroups"][-1]
    return str(status["lastFailover"]["reason"])


def test_a_guest_gone_while_its_agents_stream_still_looks_open_is_a_member_lost() -> None:
    """A guest crashed: KubeVirt reports its VMI Failed before the operator's stream to
    the dead agent notices the closed connection (found by the control-plane crash test,
    which read ResourceFaulted). The cause follows what KubeVirt says of the member."""
    assert cause_of_failover(["Running", "Failed", "Failed"]) == "MemberLost"


def test_a_group_gone_from_a_running_member_whose_agent_answers_is_a_resource_fault() -> None:
    assert cause_of_failover(["Running", "Running", "Running"]) == "ResourceFaulted"


def test_a_failover_is_not_lost_to_a_status_the_index_has_not_caught_up_with() -> None:
    """Two failovers close together (CI: 1.3 s apart): the second pass read the status
    from before the first was counted, wrote failovers 1 again, and the count stayed one
    short of the metric for good. The process counts on from what it wrote, not from what
    its index shows."""
    writer = Writes()
    publisher = Publisher("ns", "web", writer)
    stale = {"state": "Online", "onlineOn": ["web-a"], "failovers": 0}
    for i, decision in enumerate([AWAY, ONLINE_B]):
        facts = GroupFacts("shop", SPEC, stale, {}, generation=1)
        body = {"metadata": {"name": "shop", "generation": 1}, "spec": SPEC, "status": stale}
        asyncio.run(publisher.publish(Plan(groups={"shop": decision}), [], {"metadata": {}},
                                      [facts], {"shop": body}, {}, {}, 1, float(i)))
    away_a = GroupDecision("Faulted", (), "web-a", "", "")
    back_a = GroupDecision("Online", ("web-a",), None, "", "")
    stale_b = {"state": "Online", "onlineOn": ["web-a"], "failovers": 0}  # still the old one
    for i, decision in enumerate([away_a, back_a]):
        facts = GroupFacts("shop", SPEC, stale_b, {}, generation=1)
        body = {"metadata": {"name": "shop", "generation": 1}, "spec": SPEC, "status": stale_b}
        asyncio.run(publisher.publish(Plan(groups={"shop": decision}), [], {"metadata": {}},
                                      [facts], {"shop": body}, {}, {}, 1, float(2 + i)))
    written = [s for p, _, s in writer.statuses if p == "servicegroups"]
    assert written[-1]["failovers"] == 2, [s.get("failovers") for s in written]
    assert (written[-1]["lastFailover"]["from"], written[-1]["lastFailover"]["to"]) == \
        ("web-b", "web-a")


def test_a_count_whose_write_was_lost_is_written_again() -> None:
    """The status write that carried a failover's count failed (a conflict, the API
    down): the next pass writes it again, though nothing new happened."""
    writer = Writes()
    publisher = Publisher("ns", "web", writer)
    before = {"state": "Online", "onlineOn": ["web-a"], "failovers": 4}
    passes(publisher, before, [AWAY, ONLINE_B])
    writer.statuses.clear()
    passes(publisher, before, [ONLINE_B])  # the index still holds `before`: the write was lost
    written = [s for p, _, s in writer.statuses if p == "servicegroups"]
    assert written and written[-1]["failovers"] == 5
    assert written[-1]["lastFailover"]["to"] == "web-b"
