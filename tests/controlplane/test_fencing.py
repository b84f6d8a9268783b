"""Fencing through KubeVirt (DESIGN.md rule 1b) against the simulator: guestha's own
`request_stop` and `stop_verdict`, run with the operator's ServiceAccount (its RBAC).

An observer follows the VMI as the operator does - a watch, DELETED events included - and
keeps a StopRecord; each verdict reads the node and its Lease afresh. What the verdict
says is checked against the guest's processes as the host sees them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubevirtkit import FAULT, Namespace, crash_guest, greet, guest_pids, vm_manifest, wait_for

from guestha.kubevirt import kubeapi
from guestha.kubevirt.fencing import (
    ENDED_BY_HANDLER,
    NODE_OUT_OF_SERVICE,
    STOP_PENDING,
    VANISHED,
    NodeView,
    request_stop,
    stop_verdict,
)
from kits.stopwatch import Observer

pytestmark = pytest.mark.controlplane

PORT = 7300
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
# how long a verdict must stay Pending to count as "pending for ever" here: longer than the
# node monitor grace period (8 s), so the node is seen Ready=Unknown too
PENDING_FOR = 12.0


@pytest.fixture(scope="module")
def operator_api(kube: Any, simulator: Any) -> Any:
    """A client with the operator ServiceAccount's token: its RBAC, nothing more."""
    if kube.local is None:
        pytest.skip("needs the local control plane (the operator's ServiceAccount token)")
    return kubeapi.client_from_kubeconfig(str(kube.local.operator_kubeconfig()))


@pytest.fixture
def ns(kube: Any, simulator: Any) -> Iterator[Namespace]:
    name = f"fencing-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    yield Namespace(kube, name, timeout=90, interval=0.2, retry_failed=True)
    for node in ("node-1", "node-2", "node-3"):
        kube.kubectl("annotate", "node", node, f"{FAULT}-", check=False)
        kube.kubectl("taint", "node", node, f"{OUT_OF_SERVICE}-", check=False)
    kube.kubectl("delete", "namespace", name, "--timeout=120s")


def member(ns: Namespace, name: str, node: str | None = None) -> tuple[dict[str, Any], str]:
    """A runStrategy Always VM (on `node` if given), Running; its VMI and boot token."""
    manifest = vm_manifest(name, port=PORT, vsock=False, grace=30)
    if node:
        manifest["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    ns.apply(manifest)
    vmi = ns.running(name)
    return vmi, ns.token(vmi, PORT)


def stop(api: Any, vmi: dict[str, Any]) -> bool:
    meta = vmi["metadata"]
    return asyncio.run(request_stop(meta["namespace"], meta["name"], meta["uid"], client=api))


@pytest.fixture
def observer(kube: Any, operator_api: Any, ns: Namespace) -> Iterator[Observer]:
    obs = Observer(operator_api, str(kube.local.operator_kubeconfig()), ns.name, "member")
    yield obs
    obs.stop()


def test_a_guest_that_crashed_on_a_healthy_node_is_confirmed(
    ns: Namespace, observer: Observer
) -> None:
    vmi, token = member(ns, "member")
    observer.begin()
    assert stop_verdict(observer.record.observation(vmi, observer.node(  # type: ignore[union-attr]
        vmi["status"]["nodeName"]), time.time())).reason == STOP_PENDING
    crash_guest(guest_pids(token))
    observer.confirmed(ENDED_BY_HANDLER)
    assert not guest_pids(token)


def test_request_stop_on_a_healthy_node_is_confirmed_and_the_vm_restarts(
    operator_api: Any, ns: Namespace, observer: Observer
) -> None:
    """Grace 0 although the VMI asks for 30 s; the runStrategy brings a new VMI; the old
    uid never hits it."""
    vmi, token = member(ns, "member")
    observer.begin()
    assert stop(operator_api, vmi) is True
    observer.confirmed(ENDED_BY_HANDLER, timeout=20)
    assert not guest_pids(token)
    new = ns.running("member", other_than=vmi["metadata"]["uid"])
    assert ns.token(new, PORT) != token
    # idempotent, and the uid precondition spares the new VMI
    assert stop(operator_api, vmi) is False
    again = ns.get("vmi", "member")
    assert again is not None and again["metadata"]["uid"] == new["metadata"]["uid"]
    assert not again["metadata"].get("deletionTimestamp")


def test_a_stop_on_an_unresponsive_node_stays_pending_and_the_guest_runs(
    kube: Any, operator_api: Any, ns: Namespace, observer: Observer
) -> None:
    vmi, token = member(ns, "member", node="node-2")
    pids = guest_pids(token)
    address = vmi["status"]["interfaces"][0]["ipAddress"]
    kube.kubectl("annotate", "node", "node-2", f"{FAULT}=Unresponsive")
    observer.begin()
    assert stop(operator_api, vmi) is True
    observer.pending_throughout(PENDING_FOR, {STOP_PENDING}, pids)
    assert greet(address, PORT) == token
    assert not NodeView.from_objects(ns.node("node-2"), None, time.time()).ready  # type: ignore[union-attr]
    # the node answers again: its virt-handler finishes the deletion, and confirms it
    kube.kubectl("annotate", "node", "node-2", f"{FAULT}-")
    observer.confirmed(ENDED_BY_HANDLER)
    assert not guest_pids(token)


def test_a_vmi_force_deleted_on_an_unresponsive_node_is_never_proof(
    kube: Any, operator_api: Any, ns: Namespace, observer: Observer
) -> None:
    vmi, token = member(ns, "member", node="node-3")
    pids = guest_pids(token)
    address = vmi["status"]["interfaces"][0]["ipAddress"]
    kube.kubectl("annotate", "node", "node-3", f"{FAULT}=Unresponsive")
    observer.begin()
    assert stop(operator_api, vmi) is True
    ns.kubectl("patch", "vmi", "member", "--type=merge", "-p",
               '{"metadata":{"finalizers":null}}')
    ns.gone("vmi", "member", uid=vmi["metadata"]["uid"])
    observer.pending_throughout(PENDING_FOR, {VANISHED}, pids)
    assert greet(address, PORT) == token  # the split brain that the verdict refuses to see


def test_an_out_of_service_node_confirms_the_stop(
    kube: Any, operator_api: Any, ns: Namespace, observer: Observer
) -> None:
    vmi, token = member(ns, "member", node="node-1")
    kube.kubectl("annotate", "node", "node-1", f"{FAULT}=Unresponsive")
    observer.begin()
    assert stop(operator_api, vmi) is True
    assert observer.verdict().reason == STOP_PENDING
    kube.kubectl("taint", "node", "node-1", f"{OUT_OF_SERVICE}=nodeshutdown:NoExecute")
    observer.confirmed(NODE_OUT_OF_SERVICE, timeout=10)
    wait_for("the fenced guest gone", lambda: not guest_pids(token), 30)
