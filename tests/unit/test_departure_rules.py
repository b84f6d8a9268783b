"""The rules of a member's departure (controller.departure) and of the finalizer's patch
(controller.release), as tables: when a leaving member may be given the empty
configuration, when it may be let go, who is leaving, what the engine plans with."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from guestha.controller import departure, release
from guestha.controller.departure import DOWN, SILENT, STOPPED, Departures
from guestha.engine import ClusterState, GroupState, MemberState, Settings, plan
from guestha.model.members import MemberPhase, MemberView
from guestha.protocol.desired import DesiredConfig, FencingConfig, HeartbeatConfig, PeerConfig
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, STOPPING, UNKNOWN

pytestmark = pytest.mark.unit

SETTINGS = Settings(peer_timeout=3.0, self_fence_timeout=10.0, fencing_policy="KubeVirt",
                    watchdog=False, lease_margin=2.5, migration_max_pause=30.0)


@pytest.mark.parametrize(("reachable", "empty", "heard", "groups", "pending", "down",
                          "expected"), [
    # an agent that answers: only once it took the empty configuration
    (True, False, True, {"shop": OFFLINE}, False, False, None),
    (True, True, True, {}, False, False, STOPPED),
    # silent: confirmed down is enough, whatever it last said
    (False, False, False, {"shop": ONLINE}, False, True, DOWN),
    # silent, heard by this operator, its last report shows nothing running
    (False, False, True, {"shop": OFFLINE, "db": FAULTED}, False, False, SILENT),
    (False, False, True, {}, False, False, SILENT),
    # ... but not with an online asked of it since, or something possibly running
    (False, False, True, {"shop": OFFLINE}, True, False, None),
    (False, False, True, {"shop": ONLINE}, False, False, None),
    (False, False, True, {"shop": STOPPING}, False, False, None),
    (False, False, True, {"shop": UNKNOWN}, False, False, None),
    # never heard by this operator (it just started): no report to go by
    (False, False, False, {}, False, False, None),
])
def test_when_a_leaving_member_may_be_let_go(reachable: bool, empty: bool, heard: bool,
                                             groups: dict[str, str], pending: bool,
                                             down: bool, expected: str | None) -> None:
    assert departure.departed(reachable, empty, heard, groups, pending, down) == expected


@pytest.mark.parametrize(("reachable", "down", "never_ran", "expected"), [
    (False, False, True, departure.NEVER_RAN),  # no guest, no run ever heard
    (False, True, True, DOWN),
    (True, False, True, None),  # an agent that answers says for itself
    (False, False, False, None),
])
def test_a_member_that_never_ran_leaves_at_once(reachable: bool, down: bool, never_ran: bool,
                                                expected: str | None) -> None:
    assert departure.departed(reachable, False, False, {"shop": ONLINE}, False, down,
                              never_ran) == expected


def test_a_leaving_members_run_is_kept_in_status_while_it_leaves() -> None:
    leaving = Departures("ns", "web")
    leaving.joined({"status": {"members": [{"name": "b"}]}}, [view("a")], [view("b")], 0.0)
    status = leaving.status({"b": {"uid": "u-b", "node": "n1"}, "a": {"uid": "u-a"}})
    assert status["departing"] == [{"name": "b", "run": {"uid": "u-b", "node": "n1"}}]
    assert departure.departing_runs(status) == {"b": ("u-b", "n1", None)}


@pytest.mark.parametrize(("reachable", "groups", "expected"), [
    (True, {}, True),
    (True, {"shop": OFFLINE, "db": FAULTED}, True),
    (True, {"shop": ONLINE}, False),
    (True, {"shop": STOPPING}, False),
    (True, {"shop": UNKNOWN}, False),
    (False, {}, False),
])
def test_when_a_leaving_member_gets_the_empty_configuration(
        reachable: bool, groups: dict[str, str], expected: bool) -> None:
    assert departure.ready_to_empty(reachable, groups) == expected


def test_the_empty_configuration_keeps_only_the_settings() -> None:
    config = DesiredConfig(peers=(PeerConfig("b", "10.0.0.2", None, b"k" * 32),),
                           heartbeat=HeartbeatConfig(200, 1000),
                           fencing=FencingConfig(self_fence_timeout_seconds=3))
    empty = departure.emptied(config)
    assert (empty.groups, empty.peers) == ((), ())
    assert (empty.heartbeat, empty.fencing) == (config.heartbeat, config.fencing)


@pytest.mark.parametrize(("status", "current", "released", "expected"), [
    ({}, {"a"}, set(), []),
    ({"members": [{"name": "a"}, {"name": "b"}]}, {"a"}, set(), ["b"]),
    ({"members": [{"name": "a"}], "departing": [{"name": "c"}]}, {"a"}, set(), ["c"]),
    ({"members": [{"name": "b"}], "departing": [{"name": "b"}]}, {"a"}, {"b"}, []),
    ({"members": [{"name": "b"}]}, {"a", "b"}, set(), []),  # put back: a member
    ({"members": ["junk", {"nom": "x"}]}, set(), set(), []),
])
def test_who_is_leaving(status: dict[str, Any], current: set[str], released: set[str],
                        expected: list[str]) -> None:
    assert departure.leaving_names(status, current, released) == expected


def test_a_group_on_a_leaving_member_is_taken_offline_there_before_it_starts_elsewhere(
        ) -> None:
    shop = GroupState("shop", systems=(("a", 0), ("b", 1)), auto_start_list=("a", "b"))
    groups = departure.without_members([shop], {"a"})
    assert groups[0].systems == (("b", 1),) and groups[0].auto_start_list == ("b",)
    members = (MemberState("a", groups={"shop": ONLINE}),
               MemberState("b", groups={"shop": OFFLINE}))
    first = plan(ClusterState(now=100.0, settings=SETTINGS, members=members,
                              groups=tuple(groups)))
    assert [(a.kind, a.member) for a in first.actions] == [("offline", "a")]
    members = (MemberState("a", groups={"shop": OFFLINE}),
               MemberState("b", groups={"shop": OFFLINE}))
    second = plan(ClusterState(now=101.0, settings=SETTINGS, members=members,
                               groups=tuple(groups)))
    assert [(a.kind, a.member) for a in second.actions] == [("online", "b")]


def view(name: str) -> MemberView:
    return MemberView(name, MemberPhase.RUNNING, "10.0.0.1", "n1", uid=f"uid-{name}")


def test_a_deleted_cluster_lets_every_member_go_and_a_silent_one_only_after_its_bound() -> None:
    events: list[tuple[str, str]] = []
    gone = Departures("ns", "web")
    body = {"metadata": {"deletionTimestamp": "2026-11-30T10:00:00Z"},
            "status": {"members": [{"name": "a"}, {"name": "b"}]}}
    joined = gone.joined(body, [view("a"), view("b")], (), now=0.0)
    assert [v.name for v in joined] == ["a", "b"] and gone.names == {"a", "b"}
    members = (MemberState("a", groups={}),
               MemberState("b", agent_reachable=False, groups={"shop": ONLINE}))

    def settle(now: float) -> list[str]:
        state = ClusterState(now=now, settings=SETTINGS, members=members)
        return asyncio.run(gone.settle(state, lambda m: m == "a", lambda m: False, 6.0,
                                       lambda kind, reason, _: events.append((kind, reason))))

    assert settle(1.0) == ["a"]
    assert gone.status()["departing"][0]["name"] == "b"
    bound = departure.deletion_bound(6.0)
    assert settle(bound - 0.1) == []
    assert settle(bound) == ["b"]
    assert ("Warning", departure.EVENT_NOT_WAITED_FOR) in events
    assert gone.status() == {"departing": None}
    # the spec still names them: they stay let go while the cluster is deleted
    assert gone.joined(body, [view("a"), view("b")], (), now=bound + 1) == []
    written: list[dict[str, Any]] = []

    async def write(_: Any, status: dict[str, Any]) -> None:
        written.append(status)
    asyncio.run(gone.finish([({"metadata": {"generation": 2}}, {})], write, "now"))
    assert gone.finished
    assert written[0]["state"] == "Unknown" and written[0]["onlineOn"] == []  # b was not heard
    assert written[0]["conditions"][0]["reason"] == departure.CLUSTER_DELETED


def test_a_removed_member_is_never_let_go_by_the_bound() -> None:
    kept = Departures("ns", "web")
    body = {"status": {"members": [{"name": "a"}, {"name": "b"}]}}
    kept.joined(body, [view("a")], [view("b")], now=0.0)
    members = (MemberState("a"), MemberState("b", agent_reachable=False,
                                             groups={"shop": ONLINE}))
    state = ClusterState(now=10_000.0, settings=SETTINGS, members=members)
    assert asyncio.run(kept.settle(state, lambda m: False, lambda m: False, 6.0,
                                   lambda *_: None)) == []
    assert "shop" in kept.status()["departing"][0]["message"]


@pytest.mark.parametrize(("finalizers", "add", "expected"), [
    (None, True, [{"op": "add", "path": "/metadata/finalizers",
                   "value": [departure.FINALIZER]}]),
    (["kopf"], True, [{"op": "add", "path": "/metadata/finalizers/-",
                       "value": departure.FINALIZER}]),
    ([departure.FINALIZER], True, []),
    (["kopf", departure.FINALIZER], False, [{"op": "remove", "path": "/metadata/finalizers/1"}]),
    (["kopf"], False, []),
])
def test_the_finalizer_patch_is_guarded_by_the_version_read(
        finalizers: list[str] | None, add: bool, expected: list[dict[str, Any]]) -> None:
    body = {"metadata": {"resourceVersion": "42", "finalizers": finalizers}}
    patch = release.finalizer_patch(body, add)
    if not expected:
        assert patch == []
        return
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert patch[1:] == expected
