"""The operator-scale benchmark's own kubelet and virt-handler: Nodes kept Ready, running VMIs.

The KubeVirt simulator runs a guest host per VMI; 1,500 would not fit on the benchmark's
machine, and the fake agents (bench.fakeagents) stand in for the guests. So this part plays
the node side through the API alone, as the real components do:

- kubelet: each Node is registered, its status posted (Ready), and its Lease in
  kube-node-lease renewed every quarter of its duration; the objects are the simulator's
  own (kubevirtsim.nodes: node_object, kubelet_status, lease_object, renewed), so the node
  lifecycle controller and the operator's fencing verdict judge them as they judge the
  simulator's nodes;
- virt-handler: the `kubevirt.io/heartbeat` annotation every HEARTBEAT_SECONDS (KubeVirt's
  own interval), and each VMI's status once its VM's VMI exists: phase Running, nodeName,
  interfaces[].ipAddress (the fake agent's loopback address), conditions Ready and
  AgentConnected, written with fieldManager "virt-handler";
- virt-controller: the VMI created from its VM's template with the VM as its controller
  owner (kubevirtsim.vm.vmi_from_vm), without KubeVirt's finalizer (no controller here
  would remove it).

Writes go through one pool of threads (kubevirtsim.api.Api is safe to share).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterable
from typing import Any

from kubevirtsim import nodes as simnodes
from kubevirtsim import status as st
from kubevirtsim.api import LEASES, NODES, VMIS, VMS, Api, ApiError, Obj
from kubevirtsim.vm import vmi_from_vm

FIELD_MANAGER = "virt-handler"
HEARTBEAT_SECONDS = 60.0  # virt-handler's heartbeat interval
WORKERS = 8


def vm_object(namespace: str, name: str) -> Obj:
    """A small VM that KubeVirt would run (runStrategy Always)."""
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"runStrategy": "Always", "template": {"spec": {
                "terminationGracePeriodSeconds": 0,
                "domain": {"devices": {}, "memory": {"guest": "128Mi"}, "resources": {}}}}}}


def running_status(node: str, address: str, interface: str) -> Obj:
    """What virt-handler reports of a running guest whose agent answers (pure)."""
    when = st.rfc3339(st.now())
    return {"status": {
        "phase": "Running", "nodeName": node,
        "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": when}],
        "interfaces": [{"name": interface, "interfaceName": "eth0", "ipAddress": address,
                        "ipAddresses": [address], "infoSource": "domain, guest-agent"}],
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": when,
             "lastProbeTime": None},
            {"type": "AgentConnected", "status": "True", "lastTransitionTime": when,
             "lastProbeTime": None}]}}


class NodeSide:
    """The Nodes' kubelets and virt-handlers, and the VMIs they run."""

    def __init__(self, api: Api, names: Iterable[str], lease_seconds: int) -> None:
        self.api = api
        self.names = list(names)
        self.lease_seconds = lease_seconds
        self.writes = 0  # API writes made by the loop (renewals, heartbeats)
        self._uids: dict[str, str] = {}
        self._leases: dict[str, Obj] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-side", daemon=True)

    # -- nodes

    def register(self) -> None:
        """Each Node registered, its status posted, its Lease created."""
        for name in self.names:
            try:
                node = self.api.create(NODES, None, simnodes.node_object(name))
            except ApiError as e:
                if e.status != 409:
                    raise
                node = self.api.get(NODES, None, name) or {}
            self._uids[name] = node["metadata"]["uid"]
            self.api.strategic_patch(NODES, None, name, {
                "status": simnodes.kubelet_status(name, node, st.now())}, sub="status")
            self._renew(name)

    def _renew(self, name: str) -> None:
        desired = simnodes.lease_object(name, self._uids[name], self.lease_seconds, st.now())
        lease = self._leases.get(name) or self.api.get(LEASES, simnodes.NODE_LEASE_NAMESPACE,
                                                       name)
        try:
            self._leases[name] = (
                self.api.create(LEASES, simnodes.NODE_LEASE_NAMESPACE, desired) if lease is None
                else self.api.replace(LEASES, simnodes.renewed(lease, desired)))
        except ApiError as e:
            self._leases.pop(name, None)  # read again next time
            if not (e.conflict or e.not_found):
                raise

    def _beat(self, name: str) -> None:
        self.api.merge_patch(NODES, None, name, {"metadata": {"annotations": {
            st.HEARTBEAT_ANNOTATION: st.rfc3339(st.now())}}})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10.0)

    def _loop(self) -> None:
        renew = self.lease_seconds / 4  # as kubelet renews
        renewed = beaten = time.monotonic()
        while not self._stop.wait(0.25):
            now = time.monotonic()
            for due, step in ((now - renewed >= renew, self._renew),
                              (now - beaten >= HEARTBEAT_SECONDS, self._beat)):
                if not due:
                    continue
                for name in self.names:
                    try:
                        step(name)
                        self.writes += 1
                    except ApiError:
                        pass  # the next round tries again, as kubelet does
            if now - renewed >= renew:
                renewed = now
            if now - beaten >= HEARTBEAT_SECONDS:
                beaten = now

    # -- VMs and their running VMIs

    def run_vm(self, namespace: str, name: str, node: str, address: str) -> str:
        """The VM, its VMI, and the VMI Running on `node` at `address`; the VMI's uid."""
        try:
            vm = self.api.create(VMS, namespace, vm_object(namespace, name))
        except ApiError as e:
            if e.status != 409:
                raise
            vm = self.api.get(VMS, namespace, name) or {}
        vmi = vmi_from_vm(vm)
        vmi["metadata"].pop("finalizers", None)
        try:
            created = self.api.create(VMIS, namespace, vmi)
        except ApiError as e:
            if e.status != 409:
                raise
            created = self.api.get(VMIS, namespace, name) or {}
        self.api.request(
            "PATCH", VMIS.item(namespace, name), {"fieldManager": FIELD_MANAGER},
            running_status(node, address, st.interface_name(created)),
            "application/merge-patch+json")
        return str(created["metadata"]["uid"])

    def run_vms(self, wanted: Iterable[tuple[str, str, str, str]]) -> dict[tuple[str, str], str]:
        """run_vm for each (namespace, name, node, address), several at once; their uids."""
        wanted = list(wanted)
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            uids = list(pool.map(lambda w: self.run_vm(*w), wanted))
        return {(w[0], w[1]): uid for w, uid in zip(wanted, uids, strict=True)}


def namespaces(api: Api, names: Iterable[str]) -> None:
    """Create the namespaces (existing ones are fine)."""
    for name in names:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": name}}
        try:
            api.request("POST", "/api/v1/namespaces", body=body)
        except ApiError as e:
            if e.status != 409:
                raise
