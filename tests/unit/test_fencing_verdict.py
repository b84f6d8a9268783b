"""The fencing verdict (DESIGN.md rule 1b): when a requested stop counts as proof.

Tables over every branch of `stop_verdict`, the node view read from raw Node and Lease
objects, and the StopRecord that keeps the Lease mark between observations.
"""

from __future__ import annotations

from typing import Any

import pytest

from guestha.kubevirt.fencing import (
    AWAITING_RENEWAL,
    CONFIRMED,
    ENDED_BY_HANDLER,
    NODE_NOT_READY,
    NODE_OUT_OF_SERVICE,
    NODE_SILENT,
    NODE_UNKNOWN,
    PENDING,
    STOP_PENDING,
    STOPPED_ON_NODE,
    VANISHED,
    NodeView,
    StopObservation,
    StopRecord,
    parse_time,
    phase_writer,
    stop_verdict,
)

pytestmark = pytest.mark.unit

T = 1_800_000_000.0  # the stop request
MARK = T - 1.0  # the node's Lease renewTime seen at the request

HEALTHY = NodeView("node-1", ready=True, heartbeating=True, out_of_service=False,
                   lease_renewed=MARK + 2.0)
NOT_RENEWED = NodeView("node-1", True, True, False, lease_renewed=MARK)
NO_LEASE = NodeView("node-1", True, True, False, lease_renewed=None)
UNREADY = NodeView("node-1", False, False, False, lease_renewed=MARK + 2.0)
SILENT = NodeView("node-1", True, False, False, lease_renewed=MARK + 2.0)
FENCED = NodeView("node-1", False, False, True, lease_renewed=MARK)


def obs(phase: str | None, present: bool, same: bool, node: NodeView | None,
        mark: float | None = MARK, writer: str | None = None) -> StopObservation:
    return StopObservation(requested_at=T, now=T + 5.0, vmi_phase=phase, vmi_present=present,
                           vmi_uid_same=same, node=node, lease_mark=mark, phase_writer=writer)


@pytest.mark.parametrize(
    ("observation", "state", "reason"),
    [
        # the node was fenced: whatever the VMI shows
        (obs("Running", True, True, FENCED), CONFIRMED, NODE_OUT_OF_SERVICE),
        (obs(None, False, False, FENCED), CONFIRMED, NODE_OUT_OF_SERVICE),
        # only requested: the VMI is still there and not final
        (obs("Running", True, True, HEALTHY), PENDING, STOP_PENDING),
        (obs(None, True, True, HEALTHY), PENDING, STOP_PENDING),
        # vanished without a final phase (force deletion): never proof, even on a healthy node
        (obs("Running", False, False, HEALTHY), PENDING, VANISHED),
        (obs("Running", True, False, HEALTHY), PENDING, VANISHED),  # a new VMI of the VM
        (obs(None, False, False, HEALTHY), PENDING, VANISHED),
        # final (present, or gone through the finalizer), judged by the node
        (obs("Failed", True, True, HEALTHY), CONFIRMED, STOPPED_ON_NODE),
        (obs("Succeeded", False, False, HEALTHY), CONFIRMED, STOPPED_ON_NODE),
        (obs("Failed", True, False, HEALTHY), CONFIRMED, STOPPED_ON_NODE),
        (obs("Failed", False, False, None), PENDING, NODE_UNKNOWN),
        (obs("Failed", False, False, UNREADY), PENDING, NODE_NOT_READY),
        (obs("Failed", False, False, SILENT), PENDING, NODE_SILENT),
        (obs("Failed", False, False, NOT_RENEWED), PENDING, AWAITING_RENEWAL),
        (obs("Failed", False, False, NO_LEASE), PENDING, AWAITING_RENEWAL),
        # no Lease seen at the mark: the request time is the mark
        (obs("Failed", False, False,
             NodeView("node-1", True, True, False, lease_renewed=T - 0.5), mark=None),
         PENDING, AWAITING_RENEWAL),
        (obs("Failed", False, False,
             NodeView("node-1", True, True, False, lease_renewed=T + 0.5), mark=None),
         CONFIRMED, STOPPED_ON_NODE),
        # a final phase the node's own virt-handler wrote: it saw the guest end there, no
        # renewal to wait for, whatever the node does since
        (obs("Failed", True, True, NOT_RENEWED, writer="virt-handler"),
         CONFIRMED, ENDED_BY_HANDLER),
        (obs("Succeeded", False, False, SILENT, writer="virt-handler"),
         CONFIRMED, ENDED_BY_HANDLER),
        # written by anyone else (virt-controller after a pod force deletion): the Lease rule
        (obs("Failed", True, True, NOT_RENEWED, writer="virt-controller"),
         PENDING, AWAITING_RENEWAL),
        (obs("Failed", True, True, SILENT, writer="virt-controller"), PENDING, NODE_SILENT),
        # virt-handler's name on a VMI that is not final proves nothing
        (obs("Running", True, True, HEALTHY, writer="virt-handler"), PENDING, STOP_PENDING),
        (obs("Running", False, False, HEALTHY, writer="virt-handler"), PENDING, VANISHED),
    ],
)
def test_verdict(observation: StopObservation, state: str, reason: str) -> None:
    verdict = stop_verdict(observation)
    assert (verdict.state, verdict.reason) == (state, reason), verdict.message
    assert verdict.confirmed is (state == CONFIRMED)
    assert verdict.message


def stamp(epoch: float, micro: bool = False) -> str:
    import datetime as dt

    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node(ready: str = "True", heartbeat: float | None = None,
         taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    annotations = {} if heartbeat is None else {"kubevirt.io/heartbeat": stamp(heartbeat)}
    return {
        "metadata": {"name": "node-1", "annotations": annotations},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def lease(renewed: float, duration: int = 8) -> dict[str, Any]:
    return {"spec": {"renewTime": stamp(renewed, micro=True), "leaseDurationSeconds": duration}}


NOW = 1_800_000_100.0


@pytest.mark.parametrize(
    ("node_obj", "lease_obj", "ready", "heartbeating", "out_of_service"),
    [
        (node(), lease(NOW - 1), True, True, False),
        (node(heartbeat=NOW - 10), lease(NOW - 1), True, True, False),
        (node(heartbeat=NOW - 1000), lease(NOW - 1), True, False, False),  # virt-handler gone
        (node(), lease(NOW - 9), True, False, False),  # Lease expired, Ready not yet Unknown
        (node(), None, True, False, False),  # no Lease at all
        (node(ready="Unknown"), lease(NOW - 1), False, False, False),
        (node(taints=[{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]),
         lease(NOW - 100), True, False, True),
        (node(taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
         lease(NOW - 100), True, False, False),
    ],
)
def test_node_view(node_obj: dict[str, Any], lease_obj: dict[str, Any] | None, ready: bool,
                   heartbeating: bool, out_of_service: bool) -> None:
    view = NodeView.from_objects(node_obj, lease_obj, NOW)
    assert view is not None
    assert (view.name, view.ready, view.heartbeating, view.out_of_service) == (
        "node-1", ready, heartbeating, out_of_service)
    if lease_obj is not None:
        assert view.lease_renewed == pytest.approx(parse_time(lease_obj["spec"]["renewTime"]))


def test_no_node_no_view() -> None:
    assert NodeView.from_objects(None, lease(NOW), NOW) is None


def test_parse_time_reads_both_kubernetes_forms() -> None:
    assert parse_time("2027-01-15T08:00:00Z") == 1_800_000_000.0
    assert parse_time("2027-01-15T08:00:00.250000Z") == 1_800_000_000.25
    assert parse_time("not a time") is None and parse_time(None) is None


def vmi(phase: str, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": "web-a", "namespace": "apps", "uid": uid},
            "status": {"phase": phase, "nodeName": "node-1"}}


def view(renewed: float) -> NodeView:
    return NodeView("node-1", True, True, False, lease_renewed=renewed)


def test_record_moves_the_mark_when_the_vmi_finishes() -> None:
    """A final phase reached after the request needs a renewal after IT, not only after the
    request: a node that renewed once and then fell silent never confirms."""
    record = StopRecord.begin(vmi("Running"), view(100.0), now=T)
    assert record.lease_mark == 100.0 and not record.settled
    record = record.seen(vmi("Running"), view(102.0))  # renewed, VMI still running
    record = record.seen(vmi("Failed"), view(104.0))  # final; the mark moves to 104
    assert record.settled and record.lease_mark == 104.0
    assert not stop_verdict(record.observation(vmi("Failed"), view(104.0), T + 3)).confirmed
    confirmed = stop_verdict(record.observation(vmi("Failed"), view(106.0), T + 5))
    assert confirmed.reason == STOPPED_ON_NODE
    # later sightings do not move the mark again
    assert record.seen(None, view(110.0), deleted=False).lease_mark == 104.0


def test_record_deleted_event_keeps_the_last_phase() -> None:
    """The DELETED event's object says how the VMI left: through its final phase (KubeVirt's
    finalizer) or still Running (force deletion)."""
    begun = StopRecord.begin(vmi("Running"), view(100.0), now=T)
    through_finalizer = begun.seen(vmi("Succeeded"), view(101.0), deleted=True)
    forced = begun.seen(vmi("Running"), view(101.0), deleted=True)
    assert stop_verdict(through_finalizer.observation(None, view(103.0), T + 3)).confirmed
    assert stop_verdict(forced.observation(None, view(103.0), T + 3)).reason == VANISHED


def test_record_a_new_vmi_of_the_same_vm_is_not_the_stopped_one() -> None:
    record = StopRecord.begin(vmi("Running"), view(100.0), now=T)
    record = record.seen(vmi("Running", uid="u2"), view(101.0))  # old one missed, new one here
    verdict = stop_verdict(record.observation(vmi("Running", uid="u2"), view(103.0), T + 3))
    assert verdict.reason == VANISHED
    assert record.observation(vmi("Running", uid="u2"), view(103.0), T + 3).vmi_present


def test_record_of_an_already_finished_vmi_is_settled_at_once() -> None:
    record = StopRecord.begin(vmi("Failed"), view(100.0), now=T)
    assert record.settled and record.lease_mark == 100.0
    assert record.seen(vmi("Failed"), view(101.0)).lease_mark == 100.0


def owned(*managers: str) -> dict[str, Any]:
    """A VMI whose status.phase is owned by `managers` (and another field by someone)."""
    entries = [{"manager": m, "operation": "Update",
                "fieldsV1": {"f:status": {"f:phase": {}, "f:nodeName": {}}}} for m in managers]
    entries.append({"manager": "kubectl", "fieldsV1": {"f:metadata": {"f:labels": {}}}})
    return {"metadata": {"uid": "u1", "managedFields": entries},
            "status": {"phase": "Failed", "nodeName": "node-1"}}


def test_phase_writer_reads_who_owns_the_phase() -> None:
    assert phase_writer(owned("virt-handler")) == "virt-handler"
    assert phase_writer(owned("virt-controller")) == "virt-controller"
    assert phase_writer(owned("virt-handler", "virt-controller")) is None  # shared: unknown
    assert phase_writer(owned()) is None
    assert phase_writer({"metadata": {}}) is None and phase_writer(None) is None


def test_record_keeps_who_wrote_the_final_phase_and_a_deleted_event_tells_it_too() -> None:
    begun = StopRecord.begin(vmi("Running"), view(100.0), now=T)
    ended = begun.seen(owned("virt-handler"), view(100.0))
    assert stop_verdict(ended.observation(owned("virt-handler"), view(100.0), T + 0.1)) \
        .reason == ENDED_BY_HANDLER
    gone = begun.seen(owned("virt-handler"), view(100.0), deleted=True)
    assert stop_verdict(gone.observation(None, view(100.0), T + 0.1)).confirmed
    by_controller = begun.seen(owned("virt-controller"), view(100.0), deleted=True)
    assert stop_verdict(by_controller.observation(None, view(100.0), T + 0.1)).reason \
        == AWAITING_RENEWAL
