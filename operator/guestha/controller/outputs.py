"""What a supervisor's pass does outside the process, for real: status patches, Events,
the groups' Services and EndpointSlices, fencing through KubeVirt, and the verdicts on
stops (guestha.kubevirt.fencing) from kopf's indexes of VMIs, Nodes and node Leases.

Also the record of VMIs deleted from the API: kopf's index forgets an object when it is
deleted, but the verdict needs the last state of a deleted VMI (its phase when its
deletion finished through KubeVirt's finalizer), so a watch-event handler keeps it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from guestha.controller import api, endpoints, nodeleases
from guestha.controller.indexes import first
from guestha.controller.supervisor import Run
from guestha.controller.wakeups import WAKEUPS
from guestha.kubevirt import fencing
from guestha.model.members import MemberView

log = logging.getLogger(__name__)

DELETED_KEPT = 4096  # deleted VMIs remembered (the oldest are dropped first)


@dataclass
class DeletedVmis:
    """The last state of each VMI the watch reported deleted, by uid."""

    by_uid: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, body: Mapping[str, Any]) -> None:
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        self.by_uid[uid] = {"metadata": dict(body.get("metadata") or {}),
                            "status": dict(body.get("status") or {})}
        while len(self.by_uid) > DELETED_KEPT:
            del self.by_uid[next(iter(self.by_uid))]


DELETED = DeletedVmis()


@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstances")
def vmi_event(type: str | None, body: kopf.Body, namespace: str | None, name: str | None,
              **_: Any) -> None:
    """Keep the last state of a deleted VMI (the fencing verdict reads its phase)."""
    if type == "DELETED":
        DELETED.add(body)
        WAKEUPS.notify(namespace or "", vm=name)


def node_alive(node: Mapping[str, Any] | None, lease: Mapping[str, Any] | None) -> bool:
    """The node is Ready and heartbeating now (the engine's `node_ready`)."""
    view = fencing.NodeView.from_objects(node, lease, time.time())
    return view is not None and view.heartbeating


class KubeOutputs:
    """The real outputs of one cluster's supervisor."""

    def __init__(self, namespace: str, vmi_index: kopf.Index[Any, Any],
                 node_index: kopf.Index[Any, Any]) -> None:
        self.namespace = namespace
        self._vmis = vmi_index
        self._nodes = node_index
        self._stops: dict[str, fencing.StopRecord] = {}  # by run uid

    # -- writes

    async def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            await api.patch_status(plural, self.namespace, name, dict(status))
        except Exception as e:  # a write that fails is retried by the next pass
            log.warning("%s %s/%s: status not written: %s", plural, self.namespace, name, e)

    def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        kopf.event(cast(kopf.Body, dict(body)), type=kind, reason=reason,
                   message=message[:1024])

    async def endpoints(self, group: Mapping[str, Any], addresses: Mapping[str, str]) -> None:
        try:
            await endpoints.reconcile(group, addresses)
        except Exception as e:
            log.warning("ServiceGroup %s/%s: endpoints not written: %s", self.namespace,
                        (group.get("metadata") or {}).get("name"), e)

    # -- fencing

    def _node(self, name: str | None) -> fencing.NodeView | None:
        if not name:
            return None
        return fencing.NodeView.from_objects(first(self._nodes, name),
                                             nodeleases.lease(name), time.time())

    def _current(self, member: str) -> dict[str, Any] | None:
        vmi = first(self._vmis, (self.namespace, member))
        if vmi is None:
            return None
        meta = dict(vmi.get("metadata") or {}, name=member, namespace=self.namespace)
        return {"metadata": meta, "status": dict(vmi.get("status") or {})}

    async def fence(self, member: str, run: Run) -> None:
        current = self._current(member)
        if run.uid not in self._stops:
            body = current if current is not None and \
                current["metadata"].get("uid") == run.uid else {
                    "metadata": {"name": member, "namespace": self.namespace, "uid": run.uid},
                    "status": {"nodeName": run.node}}
            self._stops[run.uid] = fencing.StopRecord.begin(body, self._node(run.node),
                                                            time.time())
        try:
            await fencing.request_stop(self.namespace, member, run.uid)
        except Exception as e:  # the engine asks again while the stop is not confirmed
            log.warning("VMI %s/%s: stop not requested: %s", self.namespace, member, e)

    def stop_confirmed(self, member: str, run: Run, fenced: bool, view: MemberView) -> bool:
        now = time.time()
        node = self._node(run.node)
        current = self._current(member)
        record = self._stops.get(run.uid)
        if record is None:
            body: dict[str, Any] = {
                "metadata": {"name": member, "namespace": self.namespace, "uid": run.uid},
                "status": {"nodeName": run.node}}
            if current is not None and current["metadata"].get("uid") == run.uid:
                body = current
            record = fencing.StopRecord.begin(body, node, now)
        deleted = DELETED.by_uid.get(run.uid)
        if deleted is not None:
            record = record.seen(deleted, node, deleted=True)
        record = record.seen(current, node)
        self._stops[run.uid] = record
        verdict = fencing.stop_verdict(record.observation(current, node, now))
        if verdict.confirmed:
            self._stops.pop(run.uid, None)
            log.info("member %s/%s: stop of run %s confirmed: %s", self.namespace, member,
                     run.uid, verdict.message)
        return verdict.confirmed
