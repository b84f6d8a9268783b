"""A thin, dict-in dict-out client of the Kubernetes REST API.

The simulator reads and writes KubeVirt's custom resources, Nodes, Secrets and Events the
way virt-controller and virt-handler do: through the apiserver only. Working on plain
JSON dicts (not the generated model classes) keeps every field of KubeVirt's schema,
including those the Python client has no model for, intact across read-modify-write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]

KUBEVIRT = "/apis/kubevirt.io/v1"


class ApiError(Exception):
    """A non-2xx answer from the apiserver (or a transport failure, status 0)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}: {body[:300]}")
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True)
class Resource:
    """Where one kind lives in the REST tree."""

    prefix: str  # "/api/v1" or "/apis/group/version"
    plural: str
    namespaced: bool
    kind: str
    api_version: str

    def collection(self, namespace: str | None = None) -> str:
        if self.namespaced and namespace:
            return f"{self.prefix}/namespaces/{quote(namespace)}/{self.plural}"
        return f"{self.prefix}/{self.plural}"

    def item(self, namespace: str | None, name: str, sub: str = "") -> str:
        path = f"{self.collection(namespace)}/{quote(name)}"
        return f"{path}/{sub}" if sub else path


VMS = Resource(KUBEVIRT, "virtualmachines", True, "VirtualMachine", "kubevirt.io/v1")
VMIS = Resource(
    KUBEVIRT, "virtualmachineinstances", True, "VirtualMachineInstance", "kubevirt.io/v1"
)
NODES = Resource("/api/v1", "nodes", False, "Node", "v1")
SECRETS = Resource("/api/v1", "secrets", True, "Secret", "v1")
EVENTS = Resource("/api/v1", "events", True, "Event", "v1")
REVISIONS = Resource(
    "/apis/apps/v1", "controllerrevisions", True, "ControllerRevision", "apps/v1"
)
LEASES = Resource(
    "/apis/coordination.k8s.io/v1", "leases", True, "Lease", "coordination.k8s.io/v1"
)


def key_of(obj: Obj) -> str:
    """The work-queue key of an object: "namespace/name", or "name" when cluster-scoped."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return None, key


class Api:
    """Synchronous REST calls on one kubeconfig; safe to share between threads."""

    def __init__(self, kubeconfig: Path, timeout: float = 30.0) -> None:
        self.client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        # a pool big enough for the watches (one connection each) plus the workers
        self.client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self.timeout = timeout

    def close(self) -> None:
        self.client.close()

    # --- raw calls -------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """One request; returns the urllib3 response, unread (so watches can stream it)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method, url, headers, body, _ = self.client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.client.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                _request_timeout=timeout if timeout is not None else self.timeout,
            ).response
        except ApiException as exc:
            raise ApiError(int(exc.status or 0), str(exc.reason), str(exc.body or "")) from None
        except Exception as exc:  # urllib3 transport errors: connection refused, reset...
            raise ApiError(0, type(exc).__name__, str(exc)) from None
        if not 200 <= response.status < 300:
            try:
                text = response.data.decode(errors="replace")
            finally:
                response.release_conn()
            raise ApiError(response.status, str(response.reason), text)
        return response

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        response = self._call(method, path, query, body, content_type)
        try:
            data = response.data
        finally:
            response.release_conn()
        return json.loads(data) if data else {}

    # --- verbs -----------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.request("GET", res.item(namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list_all(self, res: Resource, namespace: str | None = None) -> Obj:
        return self.request("GET", res.collection(namespace))

    def create(self, res: Resource, namespace: str | None, obj: Obj) -> Obj:
        return self.request("POST", res.collection(namespace), body=obj)

    def replace(self, res: Resource, obj: Obj, sub: str = "", manager: str | None = None) -> Obj:
        """PUT `obj`; `manager` names the writer in managedFields (KubeVirt's components
        write as their binary's name, client-go's default: virt-handler, virt-controller)."""
        meta = obj["metadata"]
        return self.request(
            "PUT",
            res.item(meta.get("namespace"), meta["name"], sub),
            query={"fieldManager": manager} if manager else None,
            body=obj,
        )

    def merge_patch(
        self, res: Resource, namespace: str | None, name: str, patch: Obj, sub: str = ""
    ) -> Obj:
        return self.request(
            "PATCH",
            res.item(namespace, name, sub),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def strategic_patch(
        self, res: Resource, namespace: str | None, name: str, patch: Obj, sub: str = ""
    ) -> Obj:
        """A strategic merge patch (built-in kinds only): lists such as Node conditions
        merge by their key instead of being replaced whole."""
        return self.request(
            "PATCH",
            res.item(namespace, name, sub),
            body=patch,
            content_type="application/strategic-merge-patch+json",
        )

    def json_patch(
        self, res: Resource, namespace: str | None, name: str, ops: list[Obj], sub: str = ""
    ) -> Obj:
        return self.request(
            "PATCH",
            res.item(namespace, name, sub),
            body=ops,
            content_type="application/json-patch+json",
        )

    def delete(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        uid: str | None = None,
        grace_seconds: int | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Delete; False when it was already gone (or is another object by now)."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            self.request("DELETE", res.item(namespace, name), body=body)
            return True
        except ApiError as exc:
            if exc.not_found or exc.conflict:  # gone, or the uid precondition failed
                return False
            raise

    def watch(
        self,
        res: Resource,
        resource_version: str,
        timeout_seconds: int = 300,
        namespace: str | None = None,
    ) -> Iterator[Obj]:
        """Watch events from resource_version on; ends when the server closes the stream."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        response = self._call("GET", res.collection(namespace), query, timeout=timeout_seconds + 30)
        buffer = b""
        try:
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()
