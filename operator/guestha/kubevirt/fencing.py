"""Fencing a member through KubeVirt, and when a stop counts as proof (DESIGN.md rule 1b).

The operator stops a member's guest by deleting its VMI (`request_stop`), and moves a
Failover group away from it only on the verdict of `stop_verdict`: a pure function of what
the API shows. The rule, and why it is this one:

- Confirmed when the node that ran the guest confirms it: the VMI (that uid) reached
  Succeeded or Failed - its deletion finished through KubeVirt's finalizer passes through
  that phase too: the object in the watch's DELETED event carries it - while that node is
  Ready, its virt-handler heartbeating (when the node carries the heartbeat annotation)
  and its kubelet Lease renewed AFTER the stop was requested and after the final phase was
  first seen. A node that renews after the final phase was alive to act on it: its
  virt-handler kills the domain of a finished or deleted VMI.
- Confirmed at once when the final phase was written by that node's virt-handler: the
  VMI's managedFields name the manager that last changed status.phase, and KubeVirt's
  components write as their binary's name (client-go's default field manager). The
  node's own virt-handler sets Failed or Succeeded only once it saw the domain end on
  that node: that is the node confirming the stop, with no Lease renewal to wait for (a
  guest crash on a healthy node is then failed over in the time the watch takes). A
  final phase written by anyone else (virt-controller marks VMIs Failed when their pod
  was force-deleted or their node stopped answering; a person) goes through the Lease
  rule above. The only trust added is in the name: a writer that poses as virt-handler
  could forge any status anyway.
- Confirmed when that node is fenced: the taint `node.kubernetes.io/out-of-service`
  (Kubernetes' "this node is shut down" marker) says no guest runs there any more.
- Pending otherwise, and for ever if nothing changes: a stop that was only requested, a
  VMI whose node stopped answering (its deletion stays behind the finalizer while qemu runs
  on), a final phase written while the node was silent (the control plane marks VMIs
  Failed when their virt-launcher pod was force-deleted), and a VMI that VANISHED without a
  final phase: a force deletion (finalizer removed) on a node that does not answer removes
  the object while the guest runs on. There the engine waits for the member's quorum lease
  (rule 1c) instead.

Times: `now`, `requested_at` and every parsed API timestamp are Unix epoch seconds. The
rule never compares the operator's clock with a node's: "renewed after" compares the
node's Lease renewTime with the renewTime the caller saw at the mark (both written by the
node's own clock); only the freshness bounds use `now`, and a skewed clock can only make
a node look silent (Pending), never alive.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from guestha.kubevirt import kubeapi

log = logging.getLogger(__name__)

OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"  # virt-handler's, on its Node
NODE_LEASE_NAMESPACE = "kube-node-lease"
FINAL_PHASES = ("Succeeded", "Failed")
# The field manager of the node's own KubeVirt agent: a final phase it wrote is its
# confirmation that the guest's domain ended on its node.
NODE_HANDLER_MANAGER = "virt-handler"
# A virt-handler heartbeat older than this means virt-handler is not running on the node.
# Well above virt-handler's own interval (the devcluster's simulator beats every 15 s);
# the Lease renewal after the mark is the proof of life, this only rules out a node whose
# kubelet runs while virt-handler does not.
HANDLER_STALE_SECONDS = 180.0

CONFIRMED, PENDING = "Confirmed", "Pending"

# verdict reasons
NODE_OUT_OF_SERVICE = "NodeOutOfService"
STOPPED_ON_NODE = "StoppedOnNode"
ENDED_BY_HANDLER = "EndedOnNode"
STOP_PENDING = "StopPending"
VANISHED = "VanishedUnconfirmed"
NODE_UNKNOWN = "NodeUnknown"
NODE_NOT_READY = "NodeNotReady"
NODE_SILENT = "NodeSilent"
AWAITING_RENEWAL = "AwaitingNodeRenewal"


def phase_fields(vmi: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The VMI's managedFields entries that own status.phase, trimmed to what
    `phase_writer` reads (for an index that keeps little of each VMI)."""
    return [
        {"manager": entry.get("manager"), "fieldsV1": {"f:status": {"f:phase": {}}}}
        for entry in ((vmi or {}).get("metadata") or {}).get("managedFields") or ()
        if isinstance(entry, Mapping)
        and "f:phase" in (((entry.get("fieldsV1") or {}).get("f:status")) or {})
    ]


def phase_writer(vmi: Mapping[str, Any] | None) -> str | None:
    """The field manager that last changed the VMI's status.phase, by its managedFields
    (an Update moves a field's ownership to the manager that changed its value); None
    when no single manager owns it."""
    owners = {str(entry.get("manager") or "") for entry in phase_fields(vmi)}
    return owners.pop() if len(owners) == 1 else None


def parse_time(value: Any) -> float | None:
    """An API timestamp (metav1.Time or MicroTime, RFC 3339) as epoch seconds; None when
    absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class NodeView:
    """What the API says about one node, at `now`.

    ready: its Ready condition is True. heartbeating: ready, its Lease not expired, and
    virt-handler's heartbeat annotation (where the node has one) not stale.
    out_of_service: tainted node.kubernetes.io/out-of-service. lease_renewed and
    handler_heartbeat: the node's own timestamps (its clock), for "renewed after" tests.
    """

    name: str
    ready: bool
    heartbeating: bool
    out_of_service: bool
    lease_renewed: float | None = None
    handler_heartbeat: float | None = None

    @classmethod
    def from_objects(
        cls,
        node: Mapping[str, Any] | None,
        lease: Mapping[str, Any] | None,
        now: float,
        handler_stale_seconds: float = HANDLER_STALE_SECONDS,
    ) -> NodeView | None:
        """The view of a Node and its Lease in kube-node-lease; None without a Node."""
        if node is None:
            return None
        meta = node.get("metadata") or {}
        conditions = (node.get("status") or {}).get("conditions") or ()
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        taints = (node.get("spec") or {}).get("taints") or ()
        out_of_service = any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints)
        spec = (lease or {}).get("spec") or {}
        renewed = parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds")
        lease_fresh = (
            renewed is not None
            and isinstance(duration, int)
            and renewed + duration >= now
        )
        annotations = meta.get("annotations") or {}
        beat = parse_time(annotations.get(HEARTBEAT_ANNOTATION))
        handler_ok = HEARTBEAT_ANNOTATION not in annotations or (
            beat is not None and now - beat <= handler_stale_seconds
        )
        return cls(
            name=str(meta.get("name") or ""),
            ready=ready,
            heartbeating=ready and lease_fresh and handler_ok,
            out_of_service=out_of_service,
            lease_renewed=renewed,
            handler_heartbeat=beat,
        )


@dataclass(frozen=True)
class StopObservation:
    """Everything the verdict on one stopped VMI depends on.

    requested_at: when the operator requested the stop (or started to wait on a VMI that
      had already finished). now: the time of this observation.
    vmi_phase: the phase of THE stopped VMI (that uid) as last seen - for a VMI gone from
      the API, the phase in its watch DELETED event (the last state stored); None if never
      seen.
    vmi_present: an object of the VMI's name exists now; vmi_uid_same: and it is the
      stopped one (a new VMI of the same VM has another uid).
    node: the node that ran the stopped VMI (its status.nodeName), as now.
    lease_mark: that node's Lease renewTime as the caller saw it at the later of the stop
      request and the first sight of the VMI final or gone (StopRecord keeps it); None if
      no Lease was seen then (then `requested_at` is the mark, on the operator's clock).
    phase_writer: the field manager that wrote `vmi_phase` (None: unknown).
    """

    requested_at: float
    now: float
    vmi_phase: str | None
    vmi_present: bool
    vmi_uid_same: bool
    node: NodeView | None
    lease_mark: float | None = None
    phase_writer: str | None = None  # who last changed the phase (see `phase_writer`)

    @property
    def stopped_present(self) -> bool:
        return self.vmi_present and self.vmi_uid_same

    @property
    def final(self) -> bool:
        return self.vmi_phase in FINAL_PHASES


@dataclass(frozen=True)
class StopVerdict:
    state: str  # Confirmed | Pending
    reason: str
    message: str

    @property
    def confirmed(self) -> bool:
        return self.state == CONFIRMED


def stop_verdict(obs: StopObservation) -> StopVerdict:
    """Whether the guest of the stopped VMI is known to be off (see the module docstring)."""
    node = obs.node
    if node is not None and node.out_of_service:
        return StopVerdict(CONFIRMED, NODE_OUT_OF_SERVICE,
                           f"node {node.name} is tainted {OUT_OF_SERVICE_TAINT}: it is "
                           f"shut down, so is the guest")
    waited = max(0.0, obs.now - obs.requested_at)
    if not obs.final:
        if obs.stopped_present:
            return StopVerdict(PENDING, STOP_PENDING,
                               f"the VMI is still {obs.vmi_phase or 'unseen'} "
                               f"{waited:.1f}s after the stop request")
        return StopVerdict(PENDING, VANISHED,
                           f"the VMI left the API in phase {obs.vmi_phase or 'unknown'} "
                           f"without a final phase (a force deletion?): no node confirmed "
                           f"that its guest stopped")
    if obs.phase_writer == NODE_HANDLER_MANAGER and node is not None:
        return StopVerdict(CONFIRMED, ENDED_BY_HANDLER,
                           f"the VMI is {obs.vmi_phase}, written by node {node.name}'s "
                           f"{NODE_HANDLER_MANAGER}: it saw the guest end there")
    if node is None:
        return StopVerdict(PENDING, NODE_UNKNOWN,
                           f"the VMI is {obs.vmi_phase}, but the node that ran it is not "
                           f"known or gone from the API: nobody confirms its guest stopped")
    if not node.ready:
        return StopVerdict(PENDING, NODE_NOT_READY,
                           f"the VMI is {obs.vmi_phase}, but node {node.name} is not Ready")
    if not node.heartbeating:
        return StopVerdict(PENDING, NODE_SILENT,
                           f"the VMI is {obs.vmi_phase}, but node {node.name} is not "
                           f"heartbeating (Lease expired or virt-handler silent)")
    mark = obs.lease_mark if obs.lease_mark is not None else obs.requested_at
    if node.lease_renewed is None or node.lease_renewed <= mark:
        return StopVerdict(PENDING, AWAITING_RENEWAL,
                           f"the VMI is {obs.vmi_phase}; waiting for node {node.name} to "
                           f"renew its Lease after that")
    return StopVerdict(CONFIRMED, STOPPED_ON_NODE,
                       f"the VMI is {obs.vmi_phase} and node {node.name} confirmed it: "
                       f"Ready, heartbeating, its Lease renewed since")


def _phase(vmi: Mapping[str, Any] | None) -> str | None:
    phase = ((vmi or {}).get("status") or {}).get("phase")
    return str(phase) if phase else None


def _uid(vmi: Mapping[str, Any] | None) -> str | None:
    uid = ((vmi or {}).get("metadata") or {}).get("uid")
    return str(uid) if uid else None


@dataclass(frozen=True)
class StopRecord:
    """What the operator remembers about one stopped VMI between observations (pure).

    `begin` when the stop is requested (or a finished VMI is first waited on), `seen` for
    every state of that VMI's name the watch delivers (DELETED events with deleted=True),
    `observation` to ask the verdict. The Lease mark moves to the node's current renewTime
    when the VMI is first seen final or gone.
    """

    namespace: str
    vmi_name: str
    uid: str
    node: str | None
    requested_at: float
    phase: str | None
    gone: bool
    settled: bool  # final or gone seen: the mark was moved then
    lease_mark: float | None
    writer: str | None = None  # who wrote `phase` (phase_writer of the object it came from)

    @classmethod
    def begin(cls, vmi: Mapping[str, Any], node: NodeView | None, now: float) -> StopRecord:
        meta = vmi.get("metadata") or {}
        phase = _phase(vmi)
        return cls(
            namespace=str(meta.get("namespace") or ""),
            vmi_name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            node=(vmi.get("status") or {}).get("nodeName"),
            requested_at=now,
            phase=phase,
            gone=False,
            settled=phase in FINAL_PHASES,
            lease_mark=node.lease_renewed if node else None,
            writer=phase_writer(vmi),
        )

    def seen(
        self, vmi: Mapping[str, Any] | None, node: NodeView | None, deleted: bool = False
    ) -> StopRecord:
        """After the watch showed `vmi` (the object of this name now; None: none) or, with
        deleted, the last state of a VMI it reports deleted."""
        same = _uid(vmi) == self.uid
        phase = _phase(vmi) if same else self.phase
        gone = self.gone or not same or deleted
        settled = gone or phase in FINAL_PHASES
        record = replace(
            self,
            phase=phase,
            writer=phase_writer(vmi) if same else self.writer,
            gone=gone,
            node=self.node or (((vmi or {}).get("status") or {}).get("nodeName") if same
                               else None),
        )
        if settled and not self.settled:
            renewed = node.lease_renewed if node else None
            mark = renewed if renewed is not None else self.lease_mark
            return replace(record, settled=True, lease_mark=mark)
        return record

    def observation(
        self, current: Mapping[str, Any] | None, node: NodeView | None, now: float
    ) -> StopObservation:
        """The observation at `now`, given the VMI of this name now (None: none)."""
        return StopObservation(
            requested_at=self.requested_at,
            now=now,
            vmi_phase=self.phase,
            vmi_present=current is not None,
            vmi_uid_same=not self.gone and _uid(current) == self.uid,
            node=node,
            lease_mark=self.lease_mark,
            phase_writer=self.writer,
        )


def _vmi_path(namespace: str, name: str) -> str:
    return f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}"


async def request_stop(
    namespace: str,
    vmi_name: str,
    uid: str,
    *,
    client: Any = None,
    timeout: float = kubeapi.DEFAULT_TIMEOUT,
) -> bool:
    """Stop the guest of VMI `vmi_name` (uid `uid`) at once: its grace period set to 0,
    then the VMI deleted with grace 0 and a uid precondition, so that a newer VMI of the
    same VM is never hit. Idempotent (a VMI already deleting is deleted again, harmlessly).

    Returns False when no VMI with that uid exists any more (nothing to stop), True when
    its deletion was requested. This is a request, never proof: see `stop_verdict`.

    The grace period: the apiserver gives custom resources no delete grace of their own
    (it records 0 whatever the request says), so KubeVirt's own stop with a grace period
    patches the VMI's spec.terminationGracePeriodSeconds first; so does this. A KubeVirt
    whose admission refuses spec updates from others than its own service accounts
    ("update of VMI object is restricted") refuses that patch: the deletion then goes
    ahead with the VMI's own grace period (docs/fencing.md).
    """
    path = _vmi_path(namespace, vmi_name)
    patch = [
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": 0},
    ]
    try:
        await kubeapi.call("PATCH", path, patch, client=client,
                           content_type=kubeapi.JSON_PATCH, timeout=timeout)
    except kubeapi.ApiError as exc:
        if exc.not_found:
            return False
        if exc.status == 422 and "test" in exc.message.lower():
            return False  # another VMI of that name: ours is gone
        if exc.status == 0 or exc.status >= 500:
            raise
        log.info("VMI %s/%s: grace period not shortened (%s); deleting it anyway",
                 namespace, vmi_name, exc)
    options = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
        "propagationPolicy": "Background",
    }
    try:
        await kubeapi.call("DELETE", path, options, client=client, timeout=timeout)
    except kubeapi.ApiError as exc:
        if exc.not_found or exc.conflict:  # gone, or the name is another VMI's now
            return False
        raise
    log.info("VMI %s/%s (uid %s): deletion requested, grace 0", namespace, vmi_name, uid)
    return True
