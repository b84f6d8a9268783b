"""kopf indexes of what the supervisors read: ServiceGroups, Switchovers, Nodes and their
Leases (VMs and VMIs are indexed in controller.clusters).

Each index function keeps only the fields the operator uses (memory: 1,500 members and
their objects must fit in one process) and wakes the supervisors of the namespace it
touched, so a change is acted on at once instead of at the next resync.
"""

from __future__ import annotations

from typing import Any

import kopf

from guestha.controller.wakeups import WAKEUPS

GROUP, VERSION = "guestha.io", "v1alpha1"


def _identity(body: kopf.Body) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                         "uid": meta.get("uid"), "generation": meta.get("generation"),
                         "annotations": dict(meta.get("annotations") or {})}}


@kopf.index(GROUP, VERSION, "servicegroups")
def sg_index(namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: Any) -> Any:
    """ServiceGroups by (namespace, cluster): identity, spec and status."""
    WAKEUPS.notify(namespace or "")
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
    """Nodes by name: their conditions and taints (is the node alive, is it fenced)."""
    WAKEUPS.notify_all()
    return {name: {"metadata": {"name": name},
                   "spec": {"taints": list((body.get("spec") or {}).get("taints") or ())},
                   "status": {"conditions": list(
                       (body.get("status") or {}).get("conditions") or ())}}}


def first(index: kopf.Index[Any, Any], key: Any) -> Any:
    for value in index.get(key, ()):
        return value
    return None


@kopf.index(GROUP, VERSION, "inguestclusters")
def cluster_index(namespace: str | None, name: str, **_: Any) -> Any:
    """InGuestClusters by (namespace, name): whether one exists."""
    return {(namespace, name): True}


@kopf.index(GROUP, VERSION, "servicegroups")
def sg_name_index(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    """ServiceGroups by (namespace, name): the cluster each names."""
    return {(namespace, name): spec.get("cluster")}
