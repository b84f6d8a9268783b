"""InGuestCluster status from member views: what `kubectl get igc` and conditions show."""

from __future__ import annotations

import pytest

from guestha.controller import cluster_status
from guestha.kubevirt import members
from guestha.model.cluster import ClusterSpec
from guestha.model.conditions import set_condition
from guestha.model.members import MemberPhase, MemberView

pytestmark = pytest.mark.unit

T0, T1 = "2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z"


def vmi(phase: str, ip: str | None = None, agent: bool = False) -> dict[str, object]:
    status: dict[str, object] = {"phase": phase, "nodeName": "node-1"}
    if ip:
        status["interfaces"] = [{"name": "default", "ipAddress": ip}]
    status["conditions"] = [{"type": "AgentConnected", "status": "True" if agent else "False"}]
    return {"status": status}


def conditions(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined,index]


def test_observe_reads_phase_address_node_and_agent() -> None:
    view = members.observe("web-a", {"metadata": {}}, vmi("Running", "10.213.0.2", agent=True))
    assert view == MemberView("web-a", MemberPhase.RUNNING, "10.213.0.2", "node-1", True)
    assert members.observe("web-b", None, None).phase is MemberPhase.MISSING
    assert members.observe("web-c", {"metadata": {}}, None).phase is MemberPhase.STOPPED
    assert members.observe("web-d", {}, {"status": {"phase": "Weird"}}).phase is \
        MemberPhase.UNKNOWN


def test_majority_running_is_available_but_degraded() -> None:
    views = [MemberView("a", MemberPhase.RUNNING, "10.0.0.1"),
             MemberView("b", MemberPhase.RUNNING, "10.0.0.2"),
             MemberView("c", MemberPhase.SCHEDULING)]
    status = cluster_status.build(views, {}, 3, T0)
    cond = conditions(status)
    assert cond["Available"]["status"] == "True"
    assert cond["Degraded"]["status"] == "True"
    assert "c (Scheduling)" in str(cond["Degraded"]["message"])
    assert cond["Progressing"]["status"] == "True"
    assert (status["memberCount"], status["readyMembers"]) == (3, 2)
    assert status["observedGeneration"] == 3
    assert status["members"][0] == {"name": "a", "phase": "Running", "address": "10.0.0.1",
                                    "agent": "Unknown"}


def test_minority_running_is_not_available() -> None:
    views = [MemberView("a", MemberPhase.RUNNING), MemberView("b", MemberPhase.FAILED),
             MemberView("c", MemberPhase.STOPPED)]
    cond = conditions(cluster_status.build(views, {}, 1, T0))
    assert cond["Available"]["status"] == "False"
    assert cond["Available"]["reason"] == "MajorityNotRunning"


def test_unchanged_status_keeps_transition_times_and_agent_fields() -> None:
    views = [MemberView("a", MemberPhase.RUNNING, "10.0.0.1")]
    first = cluster_status.build(views, {}, 1, T0)
    first["members"][0]["agentVersion"] = "abc"
    again = cluster_status.build(views, first, 1, T1)
    assert again == first  # nothing new: the handler writes nothing
    down = cluster_status.build([MemberView("a", MemberPhase.FAILED)], first, 1, T1)
    assert conditions(down)["Available"]["lastTransitionTime"] == T1


def test_set_condition_moves_time_only_on_status_change() -> None:
    c = set_condition([], "Ready", True, "Ok", "fine", T0, 1)
    c = set_condition(c, "Ready", True, "StillOk", "fine", T1, 2)
    assert c == [{"type": "Ready", "status": "True", "reason": "StillOk", "message": "fine",
                  "lastTransitionTime": T0, "observedGeneration": 2}]
    c = set_condition(c, "Ready", False, "Broken", "no", T1, 2)
    assert c[0]["lastTransitionTime"] == T1


def test_member_selector() -> None:
    spec = ClusterSpec.from_body({"memberSelector": {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["test"]},
                             {"key": "ha", "operator": "Exists"}]}})
    vms = {"w1": {"app": "web", "ha": ""}, "w2": {"app": "web", "ha": "", "tier": "test"},
           "w3": {"app": "web"}, "db": {"app": "db", "ha": ""}}
    assert spec.member_names(vms) == ("w1",)
    listed = ClusterSpec.from_body({"members": [{"name": "b"}, {"name": "a"}]})
    assert listed.member_names(vms) == ("b", "a")


def test_agents_connected_disconnected_and_the_operators_vote_for_quorum() -> None:
    views = [MemberView(n, MemberPhase.RUNNING, f"10.0.0.{i}") for i, n in enumerate("abc")]
    seen = cluster_status.AgentSeen
    first = cluster_status.build(views, {}, 1, T0, {"a": seen(True, "v1"), "b": seen(True)},
                                 epoch=4)
    by_name = {m["name"]: m for m in first["members"]}
    assert (by_name["a"]["agent"], by_name["a"]["agentVersion"],
            by_name["a"]["lastSeenTime"]) == ("Connected", "v1", T0)
    assert by_name["c"]["agent"] == "Unknown"  # never reached
    assert first["quorum"] is True and first["epoch"] == 4  # 2 agents + operator of 4 votes
    later = T1
    second = cluster_status.build(views, first, 1, later, {"a": seen(False), "b": seen(True)})
    by_name = {m["name"]: m for m in second["members"]}
    assert (by_name["a"]["agent"], by_name["a"]["lastSeenTime"]) == ("Disconnected", later)
    assert by_name["b"]["lastSeenTime"] == T0  # still connected: not rewritten
    assert second["quorum"] is False  # 1 agent + operator of 4 votes


def test_the_run_each_member_was_heard_on_is_kept_for_the_next_operator() -> None:
    """The supervisor's runs go to status and come back from it (a restarted operator, the
    other replica); a pass that gives none keeps what is there."""
    views = [MemberView("a", MemberPhase.RUNNING, "10.0.0.1", "node-1"),
             MemberView("b", MemberPhase.STOPPED)]
    status = cluster_status.build(views, {}, 1, T0, runs={"a": {
        "uid": "u-1", "node": "node-1", "address": "10.0.0.1"}})
    assert cluster_status.runs(status) == {"a": ("u-1", "node-1", "10.0.0.1")}
    assert "run" not in status["members"][1]
    again = cluster_status.build(views, status, 1, T0)
    assert again == status  # kept, and nothing new: nothing to write
    assert cluster_status.runs({"members": [{"name": "a", "run": {"uid": "u-2"}}]}) == {
        "a": ("u-2", None, None)}
