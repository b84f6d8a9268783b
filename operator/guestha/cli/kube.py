"""The Kubernetes calls of kubectl-guestha, each one request on guestha's own API."""

from __future__ import annotations

import builtins
import datetime
import json
import math
from collections.abc import Iterator
from typing import Any

import kubernetes

GROUP, VERSION = "guestha.io", "v1alpha1"
CLEAR_ANNOTATION = "guestha.io/clear"


class Gone(Exception):
    """The object followed was deleted."""


class Client:
    """guestha's custom resources through the official client and the user's kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        kubernetes.config.load_kube_config(config_file=kubeconfig,  # type: ignore[no-untyped-call]
                                           context=context)
        self.api: Any = kubernetes.client.CustomObjectsApi()  # untyped returns
        config = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
        current = config[1] if context is None else next(
            (c for c in config[0] if c["name"] == context), None)
        if current is None:
            raise kubernetes.config.ConfigException(f"no context {context!r} in the kubeconfig")
        self.default_namespace = str(current["context"].get("namespace") or "default")

    def list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            out = self.api.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            out = self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        return list(out.get("items") or [])

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                          name))

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                             body))

    def changes(self, plural: str, namespace: str, name: str, seconds: float
                ) -> Iterator[dict[str, Any]]:
        """The object now, then each new version of it from a watch that the server ends
        after `seconds` (rounded up; the connection itself is bounded too). A deletion
        is an error naming the object."""
        current = self.get(plural, namespace, name)
        yield current
        wait = max(1, math.ceil(seconds))
        watch: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        stream = watch.stream(
            self.api.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
            field_selector=f"metadata.name={name}",
            resource_version=current["metadata"]["resourceVersion"],
            timeout_seconds=wait, _request_timeout=wait + 10)
        for event in stream:
            if event["type"] == "DELETED":
                raise Gone(f"{plural} {namespace}/{name} was deleted")
            if event["type"] in ("ADDED", "MODIFIED"):
                yield dict(event["object"])
            # ERROR (e.g. 410 Gone: too old a resourceVersion): the caller asks again

    def events(self, namespace: str | None) -> builtins.list[dict[str, Any]]:
        """core/v1 Events (where kopf posts the operator's), as plain dicts."""
        core: Any = kubernetes.client.CoreV1Api()
        if namespace is None:
            raw = core.list_event_for_all_namespaces(_preload_content=False)
        else:
            raw = core.list_namespaced_event(namespace, _preload_content=False)
        return list(json.loads(raw.data).get("items") or [])


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
