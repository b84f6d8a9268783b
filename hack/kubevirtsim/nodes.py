"""The simulated Nodes: their objects, virt-handler's heartbeat and the fault knob.

Each simulated node is a Node object that this process creates and keeps Ready, with
virt-handler's `kubevirt.io/schedulable` label and `kubevirt.io/heartbeat` annotation.
Tests and admins break a node through the API alone:

- annotation `kubevirtsim.guestha.io/fault: Unresponsive`: the node stops answering. Its
  heartbeat stops, nothing about its VMIs is written any more, its guests run on.
- annotation `kubevirtsim.guestha.io/fault: Fenced`, or the taint
  `node.kubernetes.io/out-of-service`: the node was fenced (powered off or remediated):
  its guests are dead, so its VMIs can be finished by the control plane.

Since no kube-controller-manager runs here, the node-lifecycle controller's part is
played too: a node silent for `monitor_grace` seconds gets Ready=Unknown.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterable

from kubevirtsim.api import NODES, Api, ApiError, Obj
from kubevirtsim.informer import Informer
from kubevirtsim.status import (
    FAULT_ANNOTATION,
    HEARTBEAT_ANNOTATION,
    OUT_OF_SERVICE_TAINT,
    SCHEDULABLE_LABEL,
    SIMULATED_LABEL,
    now,
    rfc3339,
)

log = logging.getLogger(__name__)

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
LIFECYCLE_TAINTS = (NOT_READY_TAINT, UNREACHABLE_TAINT)


class NodeState(enum.Enum):
    READY = "Ready"
    UNRESPONSIVE = "Unresponsive"
    FENCED = "Fenced"
    ABSENT = "Absent"  # not a node of this simulator, or its object is gone


def node_state(node: Obj | None) -> NodeState:
    """What the fault knobs on a Node object say about it (pure)."""
    if node is None:
        return NodeState.ABSENT
    fault = (node.get("metadata", {}).get("annotations") or {}).get(FAULT_ANNOTATION, "")
    taints = node.get("spec", {}).get("taints") or []
    if fault == "Fenced" or any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints):
        return NodeState.FENCED
    if fault == "Unresponsive":
        return NodeState.UNRESPONSIVE
    return NodeState.READY


def schedulable(node: Obj) -> bool:
    """Whether VMIs may be placed on a node: virt-handler's label, not cordoned, no
    NoSchedule/NoExecute taint."""
    labels = node.get("metadata", {}).get("labels") or {}
    if labels.get(SCHEDULABLE_LABEL) != "true":
        return False
    spec = node.get("spec", {})
    if spec.get("unschedulable"):
        return False
    return not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or [])


def matches_selector(node: Obj, selector: dict[str, str] | None) -> bool:
    labels = node.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def pick_node(
    nodes: Iterable[Obj], selector: dict[str, str] | None, load: dict[str, int]
) -> str | None:
    """The least-loaded ready, schedulable node matching the selector (ties: by name)."""
    fits = [
        n["metadata"]["name"]
        for n in nodes
        if node_state(n) is NodeState.READY and schedulable(n) and matches_selector(n, selector)
    ]
    if not fits:
        return None
    return str(min(fits, key=lambda name: (load.get(name, 0), name)))


def node_object(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                SCHEDULABLE_LABEL: "true",
                SIMULATED_LABEL: "true",
            },
            "annotations": {HEARTBEAT_ANNOTATION: rfc3339(now())},
        },
        "spec": {},
    }


def ready_status(
    name: str, status: str, reason: str, message: str, transition: str, heartbeat: str
) -> Obj:
    return {
        "conditions": [
            {
                "type": "Ready",
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": transition,
            }
        ],
        "addresses": [{"type": "Hostname", "address": name}],
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "devices.kubevirt.io/kvm": "1k"},
        "allocatable": {
            "cpu": "4",
            "memory": "8Gi",
            "pods": "110",
            "devices.kubevirt.io/kvm": "1k",
        },
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "v1.36.3-kubevirtsim",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "kubevirtsim://1",
            "osImage": "kubevirtsim",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


class Nodes:
    """Creates the simulated nodes and beats their hearts while they answer."""

    def __init__(
        self,
        api: Api,
        informer: Informer,
        names: list[str],
        heartbeat_seconds: float,
        monitor_grace_seconds: float,
        stop: threading.Event,
    ) -> None:
        self.api = api
        self.informer = informer
        self.names = names
        self.heartbeat_seconds = heartbeat_seconds
        self.monitor_grace_seconds = monitor_grace_seconds
        self.stop = stop
        self._last_beat: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def owns(self, name: str | None) -> bool:
        return bool(name) and name in self.names

    def get(self, name: str) -> Obj | None:
        return self.informer.get(name) if name in self.names else None

    def state(self, name: str | None) -> NodeState:
        if not name or name not in self.names:
            return NodeState.ABSENT
        return node_state(self.informer.get(name))

    def objects(self) -> list[Obj]:
        return [n for n in (self.informer.get(name) for name in self.names) if n is not None]

    # --- start-up --------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create missing nodes (existing ones, e.g. from a previous run, are adopted)."""
        for name in self.names:
            existing = self.api.get(NODES, None, name)
            if existing is None:
                self._create(name, "created")
            if node_state(existing) in (NodeState.READY, NodeState.ABSENT):
                self.beat(name)

    def start(self) -> None:
        self._thread.start()

    # --- heartbeat -------------------------------------------------------------------------
    def beat(self, name: str) -> None:
        """One virt-handler + kubelet heartbeat: annotation, label, Ready condition."""
        stamp = rfc3339(now())
        node = self.informer.get(name) or self.api.get(NODES, None, name)
        labels = (node or {}).get("metadata", {}).get("labels") or {}
        patch: Obj = {"metadata": {"annotations": {HEARTBEAT_ANNOTATION: stamp}}}
        if SCHEDULABLE_LABEL not in labels:
            patch["metadata"]["labels"] = {SCHEDULABLE_LABEL: "true"}
        taints = (node or {}).get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in LIFECYCLE_TAINTS]
        if node is not None and kept != taints:
            # the node-lifecycle controller's part: a Ready node loses not-ready/unreachable
            patch["spec"] = {"taints": kept}
            patch["metadata"]["resourceVersion"] = node["metadata"]["resourceVersion"]
        self.api.merge_patch(NODES, None, name, patch)
        ready = None
        for cond in (node or {}).get("status", {}).get("conditions") or []:
            if cond.get("type") == "Ready":
                ready = cond
        transition = stamp
        if ready is not None and ready.get("status") == "True":
            transition = str(ready.get("lastTransitionTime") or stamp)
        self.api.merge_patch(
            NODES,
            None,
            name,
            {
                "status": ready_status(
                    name,
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                    transition,
                    stamp,
                )
            },
            sub="status",
        )
        self._last_beat[name] = time.monotonic()

    def _mark_unknown(self, name: str, node: Obj) -> None:
        """The node-lifecycle controller's verdict on a node that stopped posting status."""
        for cond in node.get("status", {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "Unknown":
                return
        stamp = rfc3339(now())
        heartbeat = stamp
        for cond in node.get("status", {}).get("conditions") or []:
            if cond.get("type") == "Ready":
                heartbeat = str(cond.get("lastHeartbeatTime") or stamp)
        taints = [
            t
            for t in node.get("spec", {}).get("taints") or []
            if t.get("key") not in LIFECYCLE_TAINTS
        ]
        taints += [
            {"key": UNREACHABLE_TAINT, "effect": "NoSchedule"},
            {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": stamp},
        ]
        self.api.merge_patch(
            NODES,
            None,
            name,
            {
                "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                "spec": {"taints": taints},
            },
        )
        self.api.merge_patch(
            NODES,
            None,
            name,
            {
                "status": ready_status(
                    name,
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                    stamp,
                    heartbeat,
                )
            },
            sub="status",
        )
        log.info("node %s: Ready=Unknown (no status for %.0fs)", name, self.monitor_grace_seconds)

    def tick(self) -> None:
        for name in self.names:
            try:
                self._tick_node(name)
            except Exception:
                log.exception("node %s: heartbeat failed", name)

    def _create(self, name: str, verb: str) -> None:
        """Create the Node `name`; one that someone else created meanwhile (409) is fine."""
        try:
            self.api.create(NODES, None, node_object(name))
            log.info("node %s %s", name, verb)
        except ApiError as exc:
            if exc.status != 409:
                raise

    def _tick_node(self, name: str) -> None:
        node = self.informer.get(name)
        if node is None:
            self._create(name, "re-created")
            return
        if node_state(node) is NodeState.READY:
            self.beat(name)
            return
        silent = time.monotonic() - self._last_beat.get(name, 0.0)
        if silent >= self.monitor_grace_seconds:
            self._mark_unknown(name, node)

    def _loop(self) -> None:
        while not self.stop.wait(self.heartbeat_seconds):
            self.tick()
