"""Node fault knobs, placement, what a simulated node's kubelet posts, and the VMI status
helpers of the simulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubevirtsim import status as st
from kubevirtsim.nodes import (
    KUBELET_CONDITIONS,
    NodeState,
    due,
    kubelet_status,
    lease_object,
    micro_time,
    needs_status,
    node_state,
    pick_node,
    renewed,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def node(
    name: str,
    fault: str | None = None,
    taints: list[dict[str, str]] | None = None,
    schedulable: str = "true",
    **labels: str,
) -> dict[str, Any]:
    annotations = {st.FAULT_ANNOTATION: fault} if fault else {}
    return {
        "metadata": {
            "name": name,
            "annotations": annotations,
            "labels": {st.SCHEDULABLE_LABEL: schedulable, **labels},
        },
        "spec": {"taints": taints or []},
    }


def test_node_state() -> None:
    assert node_state(None) is NodeState.ABSENT
    assert node_state(node("a")) is NodeState.READY
    assert node_state(node("a", "Unresponsive")) is NodeState.UNRESPONSIVE
    assert node_state(node("a", "Fenced")) is NodeState.FENCED
    oos = [{"key": st.OUT_OF_SERVICE_TAINT, "effect": "NoExecute"}]
    assert node_state(node("a", "Unresponsive", oos)) is NodeState.FENCED


def test_pick_node_least_loaded_matching_and_answering() -> None:
    nodes = [
        node("n1", zone="a"),
        node("n2", zone="b"),
        node("n3", "Unresponsive", zone="a"),
        node("n4", schedulable="false"),
        node("n5", taints=[{"key": "x", "effect": "NoSchedule"}]),
    ]
    assert pick_node(nodes, None, {"n1": 2, "n2": 1}) == "n2"
    assert pick_node(nodes, None, {}) == "n1"
    assert pick_node(nodes, {"zone": "a"}, {"n1": 5}) == "n1"
    assert pick_node(nodes, {"zone": "c"}, {}) is None


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    conds: list[dict[str, Any]] = []
    assert st.set_condition(conds, "Ready", "True", NOW)
    later = NOW + dt.timedelta(minutes=1)
    assert not st.set_condition(conds, "Ready", "True", later)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert st.set_condition(conds, "Ready", "False", later, "Why", "because")
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:01:00Z"
    assert conds[0]["reason"] == "Why"
    assert st.remove_condition(conds, "Ready") and conds == []


def test_phases_and_finalizers() -> None:
    vmi: dict[str, Any] = {"metadata": {}, "spec": {}}
    assert st.set_phase(vmi, st.PENDING, NOW) and not st.set_phase(vmi, st.PENDING, NOW)
    st.set_phase(vmi, st.FAILED, NOW)
    assert st.is_final(vmi)
    assert [p["phase"] for p in vmi["status"]["phaseTransitionTimestamps"]] == ["Pending", "Failed"]
    assert st.add_finalizer(vmi, st.VMI_FINALIZER) and not st.add_finalizer(vmi, st.VMI_FINALIZER)
    assert st.remove_finalizer(vmi, st.VMI_FINALIZER)
    assert vmi["metadata"]["finalizers"] == []


def test_termination_grace_and_interface_name() -> None:
    assert st.termination_grace({"spec": {}}) == 30.0
    assert st.termination_grace({"spec": {"terminationGracePeriodSeconds": 0}}) == 0.0
    spec = {"domain": {"devices": {"interfaces": [{"name": "nic0"}]}}}
    assert st.interface_name({"spec": spec}) == "nic0"
    assert st.interface_name({"spec": {"networks": [{"name": "net"}]}}) == "net"
    assert st.interface_name({"spec": {}}) == "default"


def _ready(status: str, reason: str, transition: str = "2025-12-31T00:00:00Z") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason,
            "lastTransitionTime": transition, "lastHeartbeatTime": transition}


def test_kubelet_status_heartbeats_now_and_keeps_transitions_that_held() -> None:
    before = {"status": {"conditions": [
        _ready("True", "KubeletReady"),
        {"type": "MemoryPressure", "status": "True", "reason": "KubeletHasInsufficientMemory",
         "lastTransitionTime": "2025-12-31T00:00:00Z"},
    ]}}
    status = kubelet_status("n1", before, NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert [c["type"] for c in status["conditions"]] == [c[0] for c in KUBELET_CONDITIONS]
    assert all(c["lastHeartbeatTime"] == "2026-01-01T00:00:00Z" for c in conditions.values())
    # Ready held True: its transition stays; MemoryPressure flipped: it transitions now
    assert conditions["Ready"]["lastTransitionTime"] == "2025-12-31T00:00:00Z"
    assert conditions["MemoryPressure"]["status"] == "False"
    assert conditions["MemoryPressure"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    # a node the node lifecycle controller marked Unknown comes back Ready now
    back = kubelet_status("n1", {"status": {"conditions": [
        _ready("Unknown", "NodeStatusUnknown")]}}, NOW)
    ready = next(c for c in back["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert status["addresses"] == [{"type": "Hostname", "address": "n1"}]
    assert status["allocatable"] == status["capacity"]


@pytest.mark.parametrize(("conditions", "since_post", "wanted"), [
    ("healthy", None, True),  # never posted by this process
    ("healthy", 10.0, False),
    ("healthy", 300.0, True),  # the periodic report
    ("unknown", 1.0, True),  # the node lifecycle controller's verdict is corrected at once
    ("missing", 1.0, True),
])
def test_needs_status(conditions: str, since_post: float | None, wanted: bool) -> None:
    healthy = kubelet_status("n1", None, NOW)["conditions"]
    node: dict[str, Any] = {"status": {"conditions": {
        "healthy": healthy,
        "unknown": [c if c["type"] != "Ready" else _ready("Unknown", "NodeStatusUnknown")
                    for c in healthy],
        "missing": healthy[:-1],
    }[conditions]}}
    assert needs_status(node, since_post, 300.0) is wanted


def test_lease_is_held_by_the_node_and_owned_by_its_node_object() -> None:
    lease = lease_object("n1", "uid-1", 8, NOW)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-1"}]
    assert lease["spec"] == {"holderIdentity": "n1", "leaseDurationSeconds": 8,
                             "renewTime": "2026-01-01T00:00:00.000000Z"}
    stored = {**lease, "metadata": {**lease["metadata"], "resourceVersion": "42",
                                    "ownerReferences": []}}
    later = lease_object("n1", "uid-2", 8, NOW + dt.timedelta(seconds=2, microseconds=5))
    again = renewed(stored, later)
    assert again["metadata"]["resourceVersion"] == "42"  # an update, refused if raced
    assert again["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
    assert again["spec"]["renewTime"] == "2026-01-01T00:00:02.000005Z"
    assert micro_time(NOW) == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(("last", "at", "wanted"), [
    (None, 0.0, True), (10.0, 11.9, False), (10.0, 12.0, True), (10.0, 30.0, True)])
def test_due(last: float | None, at: float, wanted: bool) -> None:
    assert due(last, 2.0, at) is wanted
