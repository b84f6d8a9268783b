"""The API writes of letting members go (controller.departure decides when): a removed
member's user-data Secret deleted, and the InGuestCluster's finalizer added and removed.

Each write is guarded so that a stale view never undoes someone else's: the finalizer
list is changed by a JSON patch that first tests the resourceVersion it was read at (kopf
writes its own finalizer to the same list), and a Secret is deleted with a uid
precondition, only when it is guestha's user-data Secret of that VM, owned by this very
InGuestCluster (a user's Secret of the same name is never touched). A write that fails is
logged and tried again by a later pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from guestha.controller import userdata
from guestha.controller.departure import FINALIZER, DepartureApi
from guestha.kubevirt import kubeapi

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "guestha.io", "v1alpha1", "inguestclusters"


def cluster_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def finalizer_patch(body: Mapping[str, Any], add: bool) -> list[dict[str, Any]]:
    """Pure: the JSON patch that adds FINALIZER to the object (or removes it), guarded by
    the resourceVersion `body` was read at; [] when there is nothing to change."""
    meta = body.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or ())
    guard = {"op": "test", "path": "/metadata/resourceVersion",
             "value": str(meta.get("resourceVersion") or "")}
    if add:
        if FINALIZER in finalizers:
            return []
        if not finalizers:
            return [guard, {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
        return [guard, {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]
    if FINALIZER not in finalizers:
        return []
    return [guard, {"op": "remove",
                    "path": f"/metadata/finalizers/{finalizers.index(FINALIZER)}"}]


def owned_by(secret: Mapping[str, Any], cluster_uid: str) -> bool:
    return any(ref.get("uid") == cluster_uid
               for ref in (secret.get("metadata") or {}).get("ownerReferences") or ())


class ClusterRelease:
    """The real DepartureApi of one InGuestCluster."""

    def __init__(self, namespace: str, name: str, uid: str) -> None:
        self.namespace, self.name, self.uid = namespace, name, uid

    def api(self) -> DepartureApi:
        return DepartureApi(self.delete_userdata, self.add_finalizer, self.remove_finalizer)

    async def add_finalizer(self, body: Mapping[str, Any]) -> None:
        """FINALIZER on the cluster, unless it has it or is being deleted already."""
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return
        patch = finalizer_patch(body, add=True)
        if patch:
            await self._patch(patch, "added")

    async def holds_finalizer(self) -> bool:
        """Whether the cluster, as the API has it now, still carries FINALIZER."""
        try:
            body = await kubeapi.call("GET", cluster_path(self.namespace, self.name))
        except kubeapi.ApiError as e:
            if e.not_found:
                return False
            raise
        return FINALIZER in ((body.get("metadata") or {}).get("finalizers") or ())

    async def remove_finalizer(self) -> bool:
        """FINALIZER off the cluster as it is now (read first), retried on a conflict;
        False when it could not be removed (a later pass tries again)."""
        path = cluster_path(self.namespace, self.name)
        for _ in range(5):
            try:
                body = await kubeapi.call("GET", path)
            except kubeapi.ApiError as e:
                if e.not_found:
                    return True
                log.warning("%s/%s: finalizer %s not removed: %s", self.namespace,
                            self.name, FINALIZER, e)
                return False
            patch = finalizer_patch(body, add=False)
            if not patch or await self._patch(patch, "removed"):
                return True
        log.warning("%s/%s: finalizer %s not removed: the object changed under every "
                    "attempt", self.namespace, self.name, FINALIZER)
        return False

    async def _patch(self, patch: list[dict[str, Any]], what: str) -> bool:
        try:
            await kubeapi.call("PATCH", cluster_path(self.namespace, self.name), patch,
                               content_type=kubeapi.JSON_PATCH)
        except kubeapi.ApiError as e:
            # 422 / 409: the resourceVersion moved on (a newer view comes with the next pass)
            log.info("%s/%s: finalizer %s not %s: %s", self.namespace, self.name, FINALIZER,
                     what, e)
            return False
        log.info("%s/%s: finalizer %s %s", self.namespace, self.name, FINALIZER, what)
        return True

    async def delete_userdata(self, vm: str) -> None:
        """The per-member user-data Secret of a VM that left this cluster."""
        name = userdata.secret_name(vm)
        path = f"/api/v1/namespaces/{self.namespace}/secrets/{name}"
        try:
            secret = await kubeapi.call("GET", path)
            if not userdata.ours(secret, vm) or not owned_by(secret, self.uid):
                log.info("%s/%s: Secret %s is not this cluster's user-data of %s: kept",
                         self.namespace, self.name, name, vm)
                return
            await kubeapi.call("DELETE", path, {
                "kind": "DeleteOptions", "apiVersion": "v1",
                "preconditions": {"uid": secret["metadata"]["uid"]}})
        except kubeapi.ApiError as e:
            if e.not_found or e.conflict:
                return  # gone already, or replaced by another
            log.warning("%s/%s: Secret %s not deleted: %s", self.namespace, self.name, name, e)
            return
        log.info("%s/%s: Secret %s deleted (%s left the cluster)", self.namespace, self.name,
                 name, vm)
