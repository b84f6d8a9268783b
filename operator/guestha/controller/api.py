"""The operator's own writes to the Kubernetes API, outside kopf's handler patches.

kopf applies a handler's `patch` only for change handlers and timers; daemons write
through this client (the official `kubernetes` one, run in a thread to keep the loop free).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import kubernetes

GROUP, VERSION = "guestha.io", "v1alpha1"


@functools.cache
def _custom_objects() -> Any:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.CustomObjectsApi()


async def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch the status subresource of one guestha object."""
    api = _custom_objects()
    await asyncio.to_thread(api.patch_namespaced_custom_object_status, GROUP, VERSION,
                            namespace, plural, name, {"status": status})
