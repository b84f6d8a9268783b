"""kopf handlers for InGuestCluster: keep its status in step with its member VMs.

Thin by design: the indexes hold what KubeVirt shows, `kubevirt.members` turns that into
member views, `cluster_status.build` into a status; the handler patches only a change.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from guestha.controller import cluster_status
from guestha.kubevirt import members
from guestha.model.cluster import ClusterSpec

GROUP, VERSION = "guestha.io", "v1alpha1"
STATUS_INTERVAL_SECONDS = 2.0


@kopf.index("kubevirt.io", "v1", "virtualmachines")
def vm_index(namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> Any:
    """VMs by (namespace, name): their labels, for memberSelector."""
    return {(namespace, name): dict(labels)}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstances")
def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """VMIs by (namespace, name): their status."""
    return {(namespace, name): {"status": dict(body.get("status") or {})}}


def _first(index: kopf.Index[Any, Any], key: tuple[str, str]) -> Any:
    for value in index.get(key, ()):
        return value
    return None


def reconcile_status(namespace: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
                     vm_index: kopf.Index[Any, Any], vmi_index: kopf.Index[Any, Any],
                     patch: kopf.Patch) -> None:
    """Patch the cluster's status when what its members show has changed."""
    parsed = ClusterSpec.from_body(spec)
    labels = {name: _first(vm_index, (ns, name)) or {}
              for ns, name in vm_index if ns == namespace}
    views = [
        members.observe(name, _first(vm_index, (namespace, name)) if (namespace, name)
                        in vm_index else None, _first(vmi_index, (namespace, name)))
        for name in parsed.member_names(labels)
    ]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = cluster_status.build(views, dict(status), int(meta.get("generation") or 0), now)
    if any(status.get(k) != v for k, v in new.items()):
        patch.status.update(new)


@kopf.on.resume(GROUP, VERSION, "inguestclusters")
@kopf.on.create(GROUP, VERSION, "inguestclusters")
@kopf.on.update(GROUP, VERSION, "inguestclusters")
def cluster_changed(namespace: str | None, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, patch: kopf.Patch, **kwargs: Any) -> None:
    reconcile_status(namespace or "", spec, status, meta, kwargs["vm_index"],
                     kwargs["vmi_index"], patch)


@kopf.timer(GROUP, VERSION, "inguestclusters", interval=STATUS_INTERVAL_SECONDS)
def cluster_members(namespace: str | None, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, patch: kopf.Patch, **kwargs: Any) -> None:
    reconcile_status(namespace or "", spec, status, meta, kwargs["vm_index"],
                     kwargs["vmi_index"], patch)
