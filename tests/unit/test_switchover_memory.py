"""A Switchover's phase as the operator decided it stands over a status read that lags
(controller.switchovermemory): the index kopf keeps can show a Switchover the operator
already moved to Running as still Pending."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from guestha.controller import observe
from guestha.controller.switchovermemory import SwitchoverMemory
from guestha.engine import plan
from kits import enginescenarios

pytestmark = pytest.mark.unit

BODY = {"metadata": {"name": "move", "uid": "u-1"}, "spec": {"serviceGroup": "shop"}}
BODIES = {"move": BODY}


def cluster(where: dict[str, str], status: dict[str, Any]) -> Any:
    base = enginescenarios.state({
        "now": 100,
        "members": [{"name": m, "groups": {"shop": where.get(m, "Offline")}}
                    for m in ("a", "b", "c")],
        "groups": [{"name": "shop", "systems": ["a", "b", "c"]}]})
    return base, ("move", BODY["spec"], status)


def planned(base: Any, switchover: tuple[str, Any, Any]) -> Any:
    return plan(dataclasses.replace(base, switchovers=(observe.switchover(*switchover),)))


def test_a_switchover_read_back_as_pending_after_its_source_went_offline_goes_on() -> None:
    memory = SwitchoverMemory()
    base, read = cluster({"a": "Online"}, {})
    first = planned(base, memory.overlay([read], BODIES)[0])
    assert first.switchovers["move"].phase == "Running"
    assert [(a.kind, a.member) for a in first.actions] == [("offline", "a")]
    memory.decided(first.switchovers, BODIES)
    # next pass: shop is offline on a, but the index still shows the Switchover Pending
    base, stale = cluster({}, {})
    # what the engine did with the stale read: failed it, and AutoStart took shop back
    unaided = planned(base, stale)
    assert unaided.switchovers["move"].phase == "Failed"
    assert unaided.switchovers["move"].reason == "GroupNotOnline"
    second = planned(base, memory.overlay([stale], BODIES)[0])
    assert second.switchovers["move"].phase == "Running"
    assert [(a.kind, a.member) for a in second.actions] == [("online", "b")]


@pytest.mark.parametrize(("read_phase", "uid", "expected"), [
    ("Pending", "u-1", "Running"),      # the read lags: the decision stands
    ("Running", "u-1", "Running"),      # caught up
    ("Succeeded", "u-1", "Succeeded"),  # a later phase read wins
    ("Pending", "u-2", "Pending"),      # another object of the same name: not this one's
])
def test_what_the_read_shows_against_what_was_decided(read_phase: str, uid: str,
                                                      expected: str) -> None:
    memory = SwitchoverMemory()
    base, read = cluster({"a": "Online"}, {})
    memory.decided(planned(base, read).switchovers, BODIES)
    body = {**BODY, "metadata": {"name": "move", "uid": uid}}
    [(_, _, status)] = memory.overlay([("move", BODY["spec"], {"phase": read_phase})],
                                      {"move": body})
    assert status["phase"] == expected
    if read_phase == "Pending" and expected == "Running":  # the decision's from and to
        assert (status["from"], status["to"]) == ("a", "b")


def test_a_decision_is_forgotten_once_read_or_gone() -> None:
    memory = SwitchoverMemory()
    base, read = cluster({"a": "Online"}, {})
    memory.decided(planned(base, read).switchovers, BODIES)
    memory.overlay([("move", BODY["spec"], {"phase": "Running"})], BODIES)
    # caught up once: a later stale read (a relist) is taken as read
    [(_, _, again)] = memory.overlay([("move", BODY["spec"], {})], BODIES)
    assert again == {}
    memory.decided(planned(base, read).switchovers, BODIES)
    assert memory.overlay([], BODIES) == []
    [(_, _, fresh)] = memory.overlay([("move", BODY["spec"], {})], BODIES)
    assert fresh == {}
