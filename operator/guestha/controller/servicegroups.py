"""kopf handlers for ServiceGroups and Switchovers that no supervisor looks after.

A cluster's supervisor writes the status of its groups and their Switchovers. A group
that names no existing InGuestCluster, or a Switchover that names no existing group,
has no supervisor: these handlers say so in its status. They are event handlers: kopf
keeps no bookkeeping of its own on the objects for them (no finalizer, no progress or
last-handled annotations: at 500 clusters those PATCHes were most of the apiserver's
429s); each looks at every event of the object, and writes only a status that differs.
(controller.indexes wakes the supervisors a group concerns.)
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from guestha.controller import leader
from guestha.model.conditions import set_condition

GROUP, VERSION = "guestha.io", "v1alpha1"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.event(GROUP, VERSION, "servicegroups")
def group_changed(type: str | None, namespace: str | None, spec: kopf.Spec,
                  status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch,
                  **kwargs: Any) -> None:
    ns = namespace or ""
    if type == "DELETED" or meta.get("deletionTimestamp"):
        return
    cluster = spec.get("cluster")
    if not leader.is_leader() or (ns, cluster) in kwargs["cluster_index"]:
        return
    generation = int(meta.get("generation") or 0)
    message = f"no InGuestCluster {cluster!r} in namespace {ns}"
    conditions = set_condition(status.get("conditions") or (), "Ready", False,
                               "ClusterNotFound", message, _now(), generation)
    if status.get("state") != "Unknown" or status.get("message") != message:
        patch.status.update({"observedGeneration": generation, "state": "Unknown",
                             "message": message, "conditions": conditions})


@kopf.on.event(GROUP, VERSION, "switchovers")
def switchover_created(type: str | None, namespace: str | None, spec: kopf.Spec,
                       status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch,
                       **kwargs: Any) -> None:
    ns = namespace or ""
    if type == "DELETED" or meta.get("deletionTimestamp"):
        return
    group = spec.get("serviceGroup")
    if not leader.is_leader() or status.get("phase") in ("Succeeded", "Failed"):
        return
    cluster = next(iter(kwargs["sg_name_index"].get((ns, group), ())), None)
    if cluster is not None and (ns, cluster) in kwargs["cluster_index"]:
        return
    why = (f"no ServiceGroup {group!r} in namespace {ns}" if cluster is None
           else f"ServiceGroup {group!r} names no existing InGuestCluster ({cluster!r})")
    patch.status.update({"phase": "Failed", "reason": "GroupNotFound", "message": why,
                         "completionTime": _now()})
