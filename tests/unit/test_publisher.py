"""What the operator writes about failovers (guestha.controller.publisher).

The accounting had two defects found end to end (a failover counted only when the
engine's reason said Failover in the very pass the group left its member; a group back
on its own member counted as moved); these tables pin the rules down: a failover starts
when a Failover group is no longer online on the member it was last Online on (unless a
Switchover moves it), ends when it is Online on another, and runs from the first pass
that saw it gone. The API writer is a recorder here: the rule is what is tested; the
real writes are in tests/controlplane/test_failover.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from guestha.controller.observe import GroupFacts
from guestha.controller.publisher import Publisher
from guestha.engine import GroupDecision, Plan, SwitchoverDecision

pytestmark = pytest.mark.unit

SPEC = {"type": "Failover", "systems": [{"member": m, "priority": i}
                                        for i, m in enumerate(("a", "b", "c"))]}
BODY = {"metadata": {"name": "shop", "namespace": "ns", "uid": "u1"}, "spec": SPEC}


class Recorder:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []

    async def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append((plural, name, dict(status)))

    def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((reason, message))

    async def endpoints(self, group: Mapping[str, Any], addresses: Mapping[str, str]) -> None:
        pass


def run(steps: list[tuple[float, str, tuple[str, ...], str, bool | str]],
        leaving: frozenset[str] = frozenset()) -> tuple[Recorder, dict[str, Any]]:
    """Each step: (time, state, onlineOn, reason, a switchover running) -> the recorder
    and the group's status as last written (fed back like the API would); `leaving`: the
    members leaving the cluster (controller.departure)."""
    writer = Recorder()
    publisher = Publisher("ns", "web", writer, leaving=leaving)
    status: dict[str, Any] = {}
    for now, state, online, reason, switching in steps:
        phase = switching if isinstance(switching, str) else "Running"
        plan = Plan((), (), {"shop": GroupDecision(state, online, None, reason, reason)},
                    {"swo": SwitchoverDecision(phase, "a", "b", "Switchover", "")}
                    if switching else {}, None)
        bodies = {"swo": {"metadata": {"name": "swo"}, "spec": {"serviceGroup": "shop"}}}
        asyncio.run(publisher.publish(
            plan, (), {"metadata": {"name": "web"}}, [GroupFacts("shop", SPEC, status, {})],
            {"shop": BODY}, bodies, {}, 1, now))
        for plural, _, new in writer.patches:
            if plural == "servicegroups":
                status = new
    return writer, status


def test_a_failover_is_counted_from_the_pass_that_saw_the_group_gone() -> None:
    writer, status = run([
        (0.0, "Online", ("a",), "Steady", False),
        (5.0, "Stopping", (), "InProgress", False),  # the fault: gone from a
        (5.2, "Offline", (), "NotConfirmedOffline", False),
        (5.3, "Starting", (), "AutoStart", False),  # the reason need not say Failover
        (5.9, "Online", ("b",), "Steady", False)])
    assert status["failovers"] == 1
    last = status["lastFailover"]
    assert (last["from"], last["to"], last["reason"]) == ("a", "b", "MemberLost")
    assert last["durationMilliseconds"] == 900
    assert [r for r, _ in writer.events].count("FailoverStarted") == 1
    assert [r for r, _ in writer.events].count("FailedOver") == 1


def test_a_group_moved_off_a_member_that_leaves_says_so() -> None:
    _, status = run([
        (0.0, "Online", ("a",), "Steady", False),
        (1.0, "Stopping", (), "NotInSystems", False),
        (2.0, "Online", ("b",), "Steady", False)], leaving=frozenset({"a"}))
    assert (status["lastFailover"]["from"], status["lastFailover"]["reason"]) == \
        ("a", "MemberLeft")


def test_back_on_its_own_member_is_no_failover() -> None:
    _, status = run([
        (0.0, "Online", ("a",), "Steady", False),
        (1.0, "Starting", (), "OnlineRetry", False),
        (2.0, "Online", ("a",), "Steady", False)])
    assert status.get("failovers", 0) == 0 and "lastFailover" not in status


def test_a_switchover_is_no_failover() -> None:
    writer, status = run([
        (0.0, "Online", ("a",), "Steady", False),
        (1.0, "Switching", (), "Switchover", True),
        (2.0, "Online", ("b",), "Steady", True),
        (3.0, "Online", ("b",), "Steady", False),
        (4.0, "Stopping", (), "InProgress", False),  # a later loss of b counts from b
        (4.5, "Online", ("c",), "Steady", False)])
    assert status["failovers"] == 1
    assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == ("b", "c")
    assert "FailoverStarted" not in [r for r, m in writer.events if "on a" in m]


def test_a_switchover_that_succeeds_in_the_pass_that_finds_the_group_moved_is_none() -> None:
    """Found by the failover benchmark: the engine marks the Switchover Succeeded in the
    very pass that finds the group Online on its target; that pass counted a failover."""
    writer, status = run([
        (0.0, "Online", ("a",), "Steady", False),
        (1.0, "Switching", (), "Switchover", True),
        (2.0, "Online", ("b",), "Steady", "Succeeded")])
    assert status.get("failovers", 0) == 0 and "lastFailover" not in status
    assert "FailoverStarted" not in [r for r, _ in writer.events]


def test_an_application_restarted_in_place_starts_no_failover() -> None:
    """Found by the control-plane test that reads /metrics: the application killed once
    (within restartLimit) restarts on its member, the group away from Online for a pass;
    that counted a failover start in guestha_failovers_total and told FailoverStarted."""
    from guestha.controller import metrics

    def counted() -> float:
        return sum(s.value for family in metrics.REGISTRY.collect()
                   if family.name == "guestha_failovers" for s in family.samples
                   if s.name.endswith("_total"))

    before = counted()
    writer, status = run([
        (0.0, "Online", ("a",), "Steady", False),
        (1.0, "Partial", (), "InProgress", False),
        (1.5, "Online", ("a",), "Steady", False)])
    assert status.get("failovers", 0) == 0
    assert "FailoverStarted" not in [r for r, _ in writer.events]
    assert counted() == before


def test_online_attempts_are_kept_in_status_for_the_next_operator() -> None:
    """onlineRetryLimit counts onlines that ended Faulted on each member; they lived in
    the operator's memory only, so a restarted operator retried past the limit. They are
    written per member, and read back the way a new supervisor seeds its count."""
    from guestha.controller import group_status

    writer = Recorder()
    publisher = Publisher("ns", "web", writer)
    plan = Plan((), (), {"shop": GroupDecision("Faulted", (), None, "r", "r")}, {}, None)
    asyncio.run(publisher.publish(
        plan, (), {"metadata": {"name": "web"}}, [GroupFacts("shop", SPEC, {}, {})],
        {"shop": BODY}, {}, {}, 1, 0.0, attempts={"shop": {"a": 2}}))
    status = [new for plural, _, new in writer.patches if plural == "servicegroups"][-1]
    assert group_status.online_attempts(status) == {"a": 2}
    assert group_status.online_attempts({"members": [{"name": "b"}]}) == {}
