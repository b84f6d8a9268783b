"""kopf indexes of what the supervisors read: ServiceGroups, Switchovers, Nodes and their
Leases (VMs and VMIs are indexed in controller.clusters).

Each index function keeps only the fields the operator uses (memory: 1,500 members and
their objects must fit in one process) and wakes the supervisors of the namespace it
touched, so a change is acted on at once instead of at the next resync.
"""

from __future__ import annotations

from typing import Any

import kopf

from guestha.controller.wakeups import WAKEUPS, Fingerprints

GROUP, VERSION = "guestha.io", "v1alpha1"
_SEEN = Fingerprints()
_GROUP_CLUSTER: dict[Any, Any] = {}  # ServiceGroup uid -> the cluster it last named


def _essence(body: kopf.Body) -> Any:
    """What a change of a guestha object must wake its supervisor for: its spec
    (generation), annotations (clear, rotation requests) and deletion; not its status,
    which the supervisor wrote itself."""
    meta = body.get("metadata") or {}
    return (meta.get("generation"), tuple(sorted((meta.get("annotations") or {}).items())),
            meta.get("deletionTimestamp"))


def _identity(body: kopf.Body) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                         "uid": meta.get("uid"), "generation": meta.get("generation"),
                         "annotations": dict(meta.get("annotations") or {})}}


@kopf.index(GROUP, VERSION, "servicegroups")
def sg_index(namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: Any) -> Any:
    """ServiceGroups by (namespace, cluster): identity, spec and status."""
    uid, cluster = body.get("metadata", {}).get("uid"), spec.get("cluster")
    before = _GROUP_CLUSTER.get(uid, cluster)
    _GROUP_CLUSTER[uid] = cluster
    if _SEEN.changed(("sg", namespace, uid), _essence(body)):
        WAKEUPS.notify(namespace or "", cluster=cluster)
        if before != cluster:  # it moved: the cluster it left looks again too
            WAKEUPS.notify(namespace or "", cluster=before)
    return {(namespace, spec.get("cluster")): {**_identity(body), "spec": dict(spec),
                                                "status": dict(body.get("status") or {})}}


@kopf.index(GROUP, VERSION, "switchovers")
def switchover_index(namespace: str | None, spec: kopf.Spec, body: kopf.Body,
                     **_: Any) -> Any:
    """Switchovers by (namespace, service group): identity, spec and status."""
    WAKEUPS.notify(namespace or "")
    return {(namespace, spec.get("serviceGroup")): {
        **_identity(body), "spec": dict(spec), "status": dict(body.get("status") or {})}}


@kopf.index("", "v1", "nodes")
def node_index(name: str, body: kopf.Body, **_: Any) -> Any:
    """Nodes by name: their conditions and taints (is the node alive, is it fenced).
    Every supervisor is woken when a condition's status or a taint changes (not for a
    heartbeat: 3 nodes posting status would wake 500 supervisors each time)."""
    taints = list((body.get("spec") or {}).get("taints") or ())
    conditions = list((body.get("status") or {}).get("conditions") or ())
    if _SEEN.changed(("node", name), (repr(taints), tuple(
            (c.get("type"), c.get("status")) for c in conditions))):
        WAKEUPS.notify_all()
    return {name: {"metadata": {"name": name}, "spec": {"taints": taints},
                   "status": {"conditions": conditions}}}


def first(index: kopf.Index[Any, Any], key: Any) -> Any:
    for value in index.get(key, ()):
        return value
    return None


@kopf.index(GROUP, VERSION, "inguestclusters")
def cluster_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """InGuestClusters by (namespace, name): whether one exists. A change of a cluster's
    spec, annotations or deletion wakes its supervisor (only it)."""
    if _SEEN.changed(("igc", namespace, body.get("metadata", {}).get("uid")), _essence(body)):
        WAKEUPS.notify(namespace or "", cluster=name)
    return {(namespace, name): True}


@kopf.index(GROUP, VERSION, "servicegroups")
def sg_name_index(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    """ServiceGroups by (namespace, name): the cluster each names."""
    return {(namespace, name): spec.get("cluster")}
