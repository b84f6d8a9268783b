"""The publisher's one log line per move of a Failover group: the monotonic times of each
step of a failover or a Switchover (hack/bench/failover reads them to split a failover
into detection, decision, online and endpoint switch, measured inside the operator).

Passes are driven by hand with a Writer that keeps what it is given: the times are the
passes' own `now`, so the line is a function of the passes, whatever the host's speed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from guestha.controller.observe import GroupFacts
from guestha.controller.publisher import Publisher
from guestha.engine import Action, GroupDecision, Plan, SwitchoverDecision
from guestha.model.members import MemberPhase, MemberView
from kits.moves import Move, moves

pytestmark = pytest.mark.unit

SPEC = {"type": "Failover", "systems": [{"member": "a"}, {"member": "b"}],
        "resources": [], "service": {"name": "shop", "ports": [{"port": 80}]}}
BODY: dict[str, Any] = {"metadata": {"name": "shop"}}
VIEWS = [MemberView("a", MemberPhase.RUNNING, "10.0.0.1"),
         MemberView("b", MemberPhase.RUNNING, "10.0.0.2")]


class Kept:
    """A Writer that keeps the endpoints it is asked to write."""

    def __init__(self) -> None:
        self.slices: list[dict[str, str]] = []

    async def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        pass

    def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        pass

    async def endpoints(self, group: Mapping[str, Any], addresses: Mapping[str, str]) -> None:
        self.slices.append(dict(addresses))


def one_pass(publisher: Publisher, now: float, state: str, online_on: tuple[str, ...],
             actions: tuple[Action, ...] = (), switchover: str = "") -> None:
    """A pass; `switchover`: the phase of a Switchover of the group to b, if any."""
    decision = GroupDecision(state, online_on, None, "", "")
    switchovers: dict[str, Any] = {}
    bodies: dict[str, Any] = {}
    if switchover:
        switchovers = {"to-b": SwitchoverDecision(switchover, "a", "b", "", "")}
        bodies = {"to-b": {"metadata": {"name": "to-b"}, "spec": {"serviceGroup": "shop"}}}
    asyncio.run(publisher.publish(
        Plan(actions=actions, groups={"shop": decision}, switchovers=switchovers),
        VIEWS, {"metadata": {"name": "web"}}, [GroupFacts("shop", SPEC, {}, {})],
        {"shop": BODY}, bodies, {}, 1, now))


def online_b() -> tuple[Action, ...]:
    return (Action("online", "b", "shop", "Failover", ""),)


def lines(caplog: pytest.LogCaptureFixture) -> list[Move]:
    """The moves logged, read back as the failover benchmark reads them."""
    return moves("\n".join(r.getMessage() for r in caplog.records))


def test_a_failover_logs_when_it_was_noticed_planned_confirmed_and_its_endpoints_written(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "guestha.controller.publisher")
    writer = Kept()
    publisher = Publisher("ns", "web", writer)
    one_pass(publisher, 100.0, "Online", ("a",))
    one_pass(publisher, 101.0, "Faulted", ())  # gone from home: noticed, nothing planned
    one_pass(publisher, 101.5, "Starting", (), online_b())  # planned
    one_pass(publisher, 101.7, "Starting", (), online_b())  # planned again: not the first
    assert not lines(caplog)
    one_pass(publisher, 102.25, "Online", ("b",))
    [move] = lines(caplog)
    assert (move.group, move.origin, move.to, move.cause) == ("shop", "a", "b", "MemberLost")
    assert (move.noticed, move.planned, move.confirmed) == (101.0, 101.5, 102.25)
    assert move.endpoints > 0  # the host's monotonic clock after the slice's write
    assert writer.slices[-1] == {"b": "10.0.0.2"}
    one_pass(publisher, 103.0, "Online", ("b",))  # settled: no second line
    assert len(lines(caplog)) == 1


def test_the_online_planned_with_the_loss_counts_from_the_same_pass(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "guestha.controller.publisher")
    publisher = Publisher("ns", "web", Kept())
    one_pass(publisher, 10.0, "Online", ("a",))
    one_pass(publisher, 11.0, "Starting", (), online_b())
    one_pass(publisher, 11.4, "Online", ("b",))
    [move] = lines(caplog)
    assert (move.noticed, move.planned, move.confirmed) == (11.0, 11.0, 11.4)


def test_a_switchover_logs_its_move_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "guestha.controller.publisher")
    publisher = Publisher("ns", "web", Kept())
    one_pass(publisher, 10.0, "Online", ("a",))
    one_pass(publisher, 10.5, "Online", ("a",), switchover="Running")  # offline asked at a
    one_pass(publisher, 11.0, "Offline", (), online_b(), switchover="Running")
    one_pass(publisher, 11.8, "Online", ("b",), switchover="Running")
    [move] = lines(caplog)
    assert (move.origin, move.to, move.cause) == ("a", "b", "Switchover")
    assert (move.noticed, move.planned, move.confirmed) == (11.0, 11.0, 11.8)


def test_a_switchover_that_succeeds_in_the_pass_that_finds_the_group_online_keeps_its_times(
        caplog: pytest.LogCaptureFixture) -> None:
    """The engine may call the Switchover Succeeded in the very pass that sees the group
    Online on its target: the move still counts from the pass the group left home."""
    caplog.set_level(logging.INFO, "guestha.controller.publisher")
    publisher = Publisher("ns", "web", Kept())
    one_pass(publisher, 10.0, "Online", ("a",))
    one_pass(publisher, 11.0, "Offline", (), online_b(), switchover="Running")
    one_pass(publisher, 11.8, "Online", ("b",), switchover="Succeeded")
    [move] = lines(caplog)
    assert (move.noticed, move.planned, move.confirmed) == (11.0, 11.0, 11.8)


def test_back_home_before_anything_moved_logs_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "guestha.controller.publisher")
    publisher = Publisher("ns", "web", Kept())
    one_pass(publisher, 10.0, "Online", ("a",))
    one_pass(publisher, 11.0, "Starting", (), (Action("online", "a", "shop", "Restart", ""),))
    one_pass(publisher, 11.3, "Online", ("a",))
    one_pass(publisher, 12.0, "Online", ("a",))
    assert not lines(caplog)
