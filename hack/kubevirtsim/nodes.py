"""The simulated Nodes: their objects, what their kubelet and virt-handler post, the fault knob.

Each simulated node is a Node that this process registers and keeps alive the way a
kubelet does, so that kube-controller-manager's node lifecycle controller judges it as it
judges any node:

- its Lease `kube-node-lease/<node>` (owned by the Node, so the garbage collector removes
  it with the Node) is renewed every quarter of its `leaseDurationSeconds` (kubelet: 40 s);
- its status (Ready=True, the three pressure conditions False, capacity, nodeInfo) is
  posted when it registers, as soon as the Node says otherwise (the node lifecycle
  controller set Ready=Unknown while the node was silent), and at least every
  STATUS_REPORT_SECONDS (kubelet's nodeStatusReportFrequency);
- virt-handler's part: the `kubevirt.io/schedulable` label and the `kubevirt.io/heartbeat`
  annotation every `heartbeat_seconds`.

Tests and admins break a node through the API alone:

- annotation `kubevirtsim.guestha.io/fault: Unresponsive`: the node stops answering. Its
  kubelet and virt-handler fall silent (no Lease renewal, no status, no heartbeat),
  nothing about its VMIs is written any more, its guests run on. After the node monitor
  grace period the node lifecycle controller sets Ready=Unknown and the
  `node.kubernetes.io/unreachable` taints; once the annotation is gone the node posts
  Ready again at once and the controller lifts the taints.
- annotation `kubevirtsim.guestha.io/fault: Fenced`, or the taint
  `node.kubernetes.io/out-of-service`: the node was fenced (powered off or remediated):
  its guests are dead, so its VMIs can be finished by the control plane. It is silent too.

Nothing here writes Ready=Unknown or a lifecycle taint: those are kube-controller-manager's.
All writes come from one thread (the heartbeat loop); others only `wake` it.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import logging
import threading
import time
from collections.abc import Iterable

from kubevirtsim.api import LEASES, NODES, Api, ApiError, Obj
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

NODE_LEASE_NAMESPACE = "kube-node-lease"
KUBELET_LEASE_SECONDS = 40  # kubelet's default nodeLeaseDurationSeconds
STATUS_REPORT_SECONDS = 300.0  # kubelet's default nodeStatusReportFrequency (5 min)
TICK_SECONDS = 0.5  # how often the heartbeat loop looks at what is due


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


# the conditions a healthy kubelet reports: type, status, reason, message
KUBELET_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory",
     "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def _conditions(node: Obj | None) -> dict[str, Obj]:
    return {
        str(c.get("type")): c for c in (node or {}).get("status", {}).get("conditions") or []
    }


def kubelet_status(name: str, node: Obj | None, when: dt.datetime) -> Obj:
    """The status a healthy kubelet posts for `node` at `when`: every condition of
    KUBELET_CONDITIONS heartbeating now, its transition time kept while its status holds."""
    stamp = rfc3339(when)
    old = _conditions(node)
    conditions = []
    for type_, status, reason, message in KUBELET_CONDITIONS:
        previous = old.get(type_) or {}
        held = previous.get("status") == status and previous.get("lastTransitionTime")
        conditions.append({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": previous["lastTransitionTime"] if held else stamp,
        })
    capacity = {"cpu": "4", "memory": "8Gi", "pods": "110", "devices.kubevirt.io/kvm": "1k"}
    return {
        "conditions": conditions,
        "addresses": [{"type": "Hostname", "address": name}],
        "capacity": capacity,
        "allocatable": dict(capacity),
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


def needs_status(node: Obj, since_post: float | None, report_seconds: float) -> bool:
    """Whether a kubelet posts its status now: never posted by this process, the Node says
    other than the kubelet would (Ready=Unknown from the node lifecycle controller, a
    condition missing), or the last post is `report_seconds` old."""
    if since_post is None or since_post >= report_seconds:
        return True
    found = _conditions(node)
    return any(
        (found.get(type_) or {}).get("status") != status
        or (found.get(type_) or {}).get("reason") != reason
        for type_, status, reason, _ in KUBELET_CONDITIONS
    )


def micro_time(when: dt.datetime) -> str:
    """Kubernetes' metav1.MicroTime form, as a Lease's renewTime carries it."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_object(name: str, node_uid: str, lease_seconds: int, when: dt.datetime) -> Obj:
    """The node's Lease as a kubelet writes it: held by the node, owned by its Node."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": NODE_LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": lease_seconds,
            "renewTime": micro_time(when),
        },
    }


def renewed(lease: Obj, desired: Obj) -> Obj:
    """`lease` as stored, renewed: the desired spec and owner, its resourceVersion kept so
    that the update is refused if someone else wrote it meanwhile."""
    out = copy.deepcopy(lease)
    out["spec"] = {**(out.get("spec") or {}), **desired["spec"]}
    out["metadata"]["ownerReferences"] = desired["metadata"]["ownerReferences"]
    return out


def due(last: float | None, interval: float, at: float) -> bool:
    return last is None or at - last >= interval


class Nodes:
    """Registers the simulated nodes and posts for them while they answer."""

    def __init__(
        self,
        api: Api,
        informer: Informer,
        names: list[str],
        heartbeat_seconds: float,
        lease_seconds: int,
        stop: threading.Event,
        status_report_seconds: float = STATUS_REPORT_SECONDS,
    ) -> None:
        self.api = api
        self.informer = informer
        self.names = names
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_seconds = lease_seconds
        self.renew_seconds = lease_seconds / 4  # as kubelet renews its Lease
        self.status_report_seconds = status_report_seconds
        self.stop = stop
        self._leases: dict[str, Obj] = {}  # each node's Lease as last written
        self._renewed: dict[str, float] = {}
        self._posted: dict[str, float] = {}
        self._beaten: dict[str, float] = {}
        self._answering: dict[str, bool] = {}
        self._wake = threading.Event()
        self._now_lock = threading.Lock()  # guards _now only; never held across a call
        self._now: set[str] = set()  # nodes to post for at the next tick, whatever is due
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

    # --- running -------------------------------------------------------------------------
    def ensure(self) -> None:
        """Register missing nodes (existing ones, e.g. from a previous run, are adopted) and
        post for every answering one; called once before `start`, so from one thread."""
        for name in self.names:
            self._tick_node(name, time.monotonic(), force=True, strict=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, name: str) -> None:
        """Post for `name` now (it answers again): Lease, status and heartbeat."""
        with self._now_lock:
            self._now.add(name)
        self._wake.set()

    def tick(self) -> None:
        with self._now_lock:
            forced, self._now = self._now, set()
        for name in self.names:
            try:
                self._tick_node(name, time.monotonic(), force=name in forced)
            except Exception:
                log.exception("node %s: posting failed", name)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.tick()
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    # --- one node ------------------------------------------------------------------------
    def _tick_node(self, name: str, at: float, force: bool, strict: bool = False) -> None:
        node = self.informer.get(name)
        if node is None:
            node = self._register(name)
            force = True
            if node is None:
                return
        answering = node_state(node) is NodeState.READY
        if self._answering.get(name) != answering:
            log.info("node %s: %s", name, "answering" if answering else "silent")
            self._answering[name] = answering
        if not answering:
            return
        steps = (
            (self._renew, force or due(self._renewed.get(name), self.renew_seconds, at)),
            (self._post_status, force or needs_status(
                node, None if name not in self._posted else at - self._posted[name],
                self.status_report_seconds)),
            (self._beat, force or due(self._beaten.get(name), self.heartbeat_seconds, at)),
        )
        for step, wanted in steps:
            if not wanted:
                continue
            try:
                step(name, node)
            except Exception:
                if strict:
                    raise
                log.exception("node %s: %s failed", name, step.__name__.strip("_"))

    def _register(self, name: str) -> Obj | None:
        """Create the Node `name`; one that someone else created meanwhile (409) is fine."""
        try:
            created = self.api.create(NODES, None, node_object(name))
            log.info("node %s registered", name)
            return created
        except ApiError as exc:
            if exc.status != 409:
                raise
            return self.api.get(NODES, None, name)

    def _renew(self, name: str, node: Obj) -> None:
        desired = lease_object(name, node["metadata"]["uid"], self.lease_seconds, now())
        lease = self._leases.get(name) or self.api.get(LEASES, NODE_LEASE_NAMESPACE, name)
        try:
            if lease is None:
                stored = self.api.create(LEASES, NODE_LEASE_NAMESPACE, desired)
            else:
                stored = self.api.replace(LEASES, renewed(lease, desired))
        except ApiError as exc:
            self._leases.pop(name, None)  # read it again next time
            if exc.conflict or exc.not_found:
                return
            raise
        self._leases[name] = stored
        self._renewed[name] = time.monotonic()

    def _post_status(self, name: str, node: Obj) -> None:
        self.api.strategic_patch(
            NODES, None, name, {"status": kubelet_status(name, node, now())}, sub="status"
        )
        self._posted[name] = time.monotonic()

    def _beat(self, name: str, node: Obj) -> None:
        """virt-handler's heartbeat: its annotation, and its label if missing."""
        patch: Obj = {"metadata": {"annotations": {HEARTBEAT_ANNOTATION: rfc3339(now())}}}
        if (node["metadata"].get("labels") or {}).get(SCHEDULABLE_LABEL) is None:
            patch["metadata"]["labels"] = {SCHEDULABLE_LABEL: "true"}
        self.api.merge_patch(NODES, None, name, patch)
        self._beaten[name] = time.monotonic()
