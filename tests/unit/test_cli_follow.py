"""`kubectl guestha switch --wait`: progress lines, exit codes, and the deadline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from guestha.cli import events, exitcodes, follow

pytestmark = pytest.mark.unit


def sw(phase: str | None, **status: str) -> dict[str, Any]:
    return {"status": {**({"phase": phase} if phase else {}), **status}}


@pytest.mark.parametrize(("printed", "body", "line", "code"), [
    (None, sw(None), "Pending", None),
    ("Pending", sw(None), None, None),
    ("Pending", sw("Pending", reason="WaitingForGroup"), None, None),
    ("Pending", sw("Running", **{"from": "web-a", "to": "web-b"}, reason="StoppingSource"),
     "Running: from web-a to web-b; StoppingSource", None),
    ("Running", sw("Succeeded", **{"from": "web-a", "to": "web-b"}, reason="Switched",
                   message="shop online on web-b"),
     "Succeeded: from web-a to web-b; Switched; shop online on web-b", exitcodes.OK),
    ("Pending", sw("Failed", reason="GroupFrozen", message="shop is frozen"),
     "Failed: GroupFrozen; shop is frozen", exitcodes.SWITCHOVER_FAILED),
    (None, sw("Succeeded", reason="AlreadyOnTarget"), "Succeeded: AlreadyOnTarget",
     exitcodes.OK),
])
def test_step(printed: str | None, body: dict[str, Any], line: str | None,
              code: int | None) -> None:
    result = follow.step(printed, body)
    assert (result.line, result.exit_code) == (line, code)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_follow_prints_each_phase_once_and_ends_with_the_final_one() -> None:
    said: list[str] = []
    asked: list[float] = []

    def changes(left: float) -> Iterator[dict[str, Any]]:
        asked.append(left)
        yield from [sw(None), sw(None), sw("Running"), sw("Running"), sw("Succeeded")]

    assert follow.follow(changes, said.append, 60, Clock()) == exitcodes.OK
    assert said == ["Pending", "Running", "Succeeded"]
    assert asked == [60]


def test_follow_asks_again_while_time_is_left_and_gives_up_at_the_deadline() -> None:
    said: list[str] = []
    clock = Clock()
    asked: list[float] = []

    def changes(left: float) -> Iterator[dict[str, Any]]:
        asked.append(left)
        yield sw("Running")
        clock.now += min(left, 0.5)  # a watch that the server ends after 0.5 s

    code = follow.follow(changes, said.append, 1.2, clock)
    assert code == exitcodes.TIMEOUT
    assert said == ["Running", "timed out after 1.2s, still Running"]
    assert asked == pytest.approx([1.2, 0.7, 0.2])


def test_follow_stops_reading_at_the_deadline_even_if_changes_keep_coming() -> None:
    said: list[str] = []
    clock = Clock()

    def changes(left: float) -> Iterator[dict[str, Any]]:
        while True:
            clock.now += 0.3
            yield sw("Running")

    assert follow.follow(changes, said.append, 1.0, clock) == exitcodes.TIMEOUT
    assert clock.now == pytest.approx(101.2)


def test_the_exit_codes_are_distinct_and_listed_in_the_help() -> None:
    codes = [exitcodes.OK, exitcodes.API_ERROR, exitcodes.USAGE, exitcodes.SWITCHOVER_FAILED,
             exitcodes.TIMEOUT]
    assert len(set(codes)) == len(codes)
    assert [int(line.split()[0]) for line in exitcodes.HELP.splitlines()[1:]] == codes


def event(name: str, kind: str, at: str, api: str = "guestha.io/v1alpha1",
          reason: str = "GroupOnline") -> dict[str, Any]:
    return {"involvedObject": {"apiVersion": api, "kind": kind, "name": name,
                               "namespace": "apps"},
            "lastTimestamp": at, "type": "Normal", "reason": reason, "message": "m"}


def test_events_are_guesthas_only_oldest_first_and_by_name() -> None:
    found = [event("shop", "ServiceGroup", "2026-11-30T10:00:02Z"),
             event("web", "InGuestCluster", "2026-11-30T10:00:01Z"),
             event("web-a", "VirtualMachine", "2026-11-30T10:00:00Z", api="kubevirt.io/v1"),
             event("shop", "Pod", "2026-11-30T10:00:03Z", api="v1"),
             {**event("shop", "ServiceGroup", ""), "lastTimestamp": None,
              "eventTime": "2026-11-30T10:00:00.5Z"}]
    ours = events.guestha_events(found, None)
    assert [events.when(e) for e in ours] == ["2026-11-30T10:00:00.5Z",
                                              "2026-11-30T10:00:01Z", "2026-11-30T10:00:02Z"]
    assert [e["involvedObject"]["kind"] for e in events.guestha_events(found, "shop")] == [
        "ServiceGroup", "ServiceGroup"]
    assert events.rows(events.guestha_events(found, "web")) == [
        ["2026-11-30T10:00:01Z", "apps", "Normal", "GroupOnline", "inguestcluster/web", "1",
         "m"]]
