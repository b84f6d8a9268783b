"""Node fault knobs, placement and the VMI status helpers of the simulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubevirtsim import status as st
from kubevirtsim.nodes import NodeState, node_state, pick_node

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
