"""The Kubernetes calls of kubectl-guestha, each one request on guestha's own API."""

from __future__ import annotations

import datetime
from typing import Any

import kubernetes

GROUP, VERSION = "guestha.io", "v1alpha1"
CLEAR_ANNOTATION = "guestha.io/clear"


class Client:
    """guestha's custom resources through the official client and the user's kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        kubernetes.config.load_kube_config(config_file=kubeconfig,  # type: ignore[no-untyped-call]
                                           context=context)
        self.api: Any = kubernetes.client.CustomObjectsApi()  # untyped returns
        config = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
        current = config[1] if context is None else next(
            c for c in config[0] if c["name"] == context)
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


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
