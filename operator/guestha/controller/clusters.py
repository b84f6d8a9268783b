"""kopf handlers for InGuestCluster: keep its status in step with its member VMs.

Thin by design: the indexes hold what KubeVirt shows, `kubevirt.members` turns that into
member views, `cluster_status.build` into a status, written only when it changed. A change
of the spec is handled at once; a change of a VM or VMI wakes each cluster's daemon.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kopf

from guestha.controller import api, cluster_status
from guestha.controller.wakeups import WAKEUPS
from guestha.kubevirt import members
from guestha.model.cluster import ClusterSpec

GROUP, VERSION = "guestha.io", "v1alpha1"
RESYNC_SECONDS = 60.0


@kopf.index("kubevirt.io", "v1", "virtualmachines")
def vm_index(namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> Any:
    """VMs by (namespace, name): their labels, for memberSelector."""
    WAKEUPS.notify(namespace or "")
    return {(namespace, name): dict(labels)}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstances")
def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """VMIs by (namespace, name): their status."""
    WAKEUPS.notify(namespace or "")
    return {(namespace, name): {"status": dict(body.get("status") or {})}}


def _first(index: kopf.Index[Any, Any], key: tuple[str, str]) -> Any:
    for value in index.get(key, ()):
        return value
    return None


def desired_status(namespace: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
                   vm_index: kopf.Index[Any, Any], vmi_index: kopf.Index[Any, Any]
                   ) -> dict[str, Any] | None:
    """The cluster's new status, or None when what its members show has not changed."""
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
    return new if any(status.get(k) != v for k, v in new.items()) else None


@kopf.on.resume(GROUP, VERSION, "inguestclusters")
@kopf.on.create(GROUP, VERSION, "inguestclusters")
@kopf.on.update(GROUP, VERSION, "inguestclusters")
def cluster_changed(namespace: str | None, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, patch: kopf.Patch, **kwargs: Any) -> None:
    new = desired_status(namespace or "", spec, status, meta, kwargs["vm_index"],
                         kwargs["vmi_index"])
    if new is not None:
        patch.status.update(new)


@kopf.daemon(GROUP, VERSION, "inguestclusters", cancellation_timeout=5.0)
async def cluster_members(namespace: str | None, name: str, spec: kopf.Spec,
                          status: kopf.Status, meta: kopf.Meta, stopped: kopf.DaemonStopped,
                          **kwargs: Any) -> None:
    """Follow the members' VMs and VMIs for as long as the cluster exists."""
    ns = namespace or ""
    with WAKEUPS.subscribe(ns) as changed:
        while not stopped:
            await WAKEUPS.wait(changed, RESYNC_SECONDS)
            await asyncio.sleep(0.05)  # let a burst of changes settle into one write
            new = desired_status(ns, spec, status, meta, kwargs["vm_index"],
                                 kwargs["vmi_index"])
            if new is not None:
                await api.patch_status("inguestclusters", ns, name, new)
