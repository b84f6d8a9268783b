"""The nodes' kubelet Leases (namespace kube-node-lease), read every second.

The fencing verdict needs each node's latest renewTime (guestha.kubevirt.fencing). kopf
would watch Leases in every namespace to index the few in kube-node-lease, which would
need read access to every Lease in the cluster; a list of that one namespace each second
needs only a Role there (manifests/base/rbac.yaml) and costs the apiserver one small
request per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from guestha.kubevirt import kubeapi
from guestha.kubevirt.fencing import NODE_LEASE_NAMESPACE

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_LEASES: dict[str, dict[str, Any]] = {}
_TASK: asyncio.Task[None] | None = None


def lease(node: str) -> Mapping[str, Any] | None:
    """The node's Lease as last listed (None: not seen)."""
    return _LEASES.get(node)


async def _poll() -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
    while True:
        try:
            listed = await kubeapi.call("GET", path)
            fresh = {str(item["metadata"]["name"]): {"spec": dict(item.get("spec") or {})}
                     for item in (listed or {}).get("items") or ()}
            _LEASES.clear()
            _LEASES.update(fresh)
        except kubeapi.ApiError as e:
            log.warning("node Leases not listed: %s", e)
        await asyncio.sleep(POLL_SECONDS)


@kopf.on.startup()
async def start_polling(**_: Any) -> None:
    global _TASK
    _TASK = asyncio.create_task(_poll(), name="guestha-node-leases")


@kopf.on.cleanup()
async def stop_polling(**_: Any) -> None:
    if _TASK is not None:
        _TASK.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _TASK
