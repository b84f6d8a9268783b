"""Kubernetes Events about VMs and VMIs, as KubeVirt's recorders emit them.

Clients (and people running `kubectl describe`) learn of starts, stops and crashes from
core v1 Events with KubeVirt's reason names. Posting an Event never fails a reconcile:
an apiserver that refuses one is logged and ignored, as client-go's recorder does.
"""

from __future__ import annotations

import logging

from kubevirtsim.api import EVENTS, Api, ApiError, Obj
from kubevirtsim.status import now, rfc3339

log = logging.getLogger(__name__)


class Recorder:
    """Posts Events on behalf of one component (virt-controller or virt-handler)."""

    def __init__(self, api: Api, component: str) -> None:
        self.api = api
        self.component = component

    def event(
        self, obj: Obj, type_: str, reason: str, message: str, host: str | None = None
    ) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        stamp = rfc3339(now())
        source: Obj = {"component": self.component}
        if host:
            source["host"] = host
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": namespace,
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": host or self.component,
        }
        try:
            self.api.create(EVENTS, namespace, event)
        except ApiError as exc:
            log.warning(
                "event %s on %s/%s not posted: %s", reason, namespace, meta.get("name"), exc
            )
        log.info("event %s %s %s/%s: %s", type_, reason, namespace, meta.get("name"), message)

    def normal(self, obj: Obj, reason: str, message: str, host: str | None = None) -> None:
        self.event(obj, "Normal", reason, message, host)

    def warning(self, obj: Obj, reason: str, message: str, host: str | None = None) -> None:
        self.event(obj, "Warning", reason, message, host)
