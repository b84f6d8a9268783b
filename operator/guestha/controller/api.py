"""The operator's own writes to the Kubernetes API, outside kopf's handler patches.

kopf applies a handler's `patch` only for change handlers and timers; daemons write
through this client (the official `kubernetes` one, run in a thread to keep the loop free).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import kubernetes

from guestha.channel.transport import KubeAccess

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


@functools.cache
def _api_client() -> Any:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


def core() -> Any:
    """The core/v1 API (Secrets, Namespaces) of the operator's credentials."""
    return kubernetes.client.CoreV1Api(_api_client())


def custom() -> Any:
    """Custom resources (guestha's, KubeVirt's) through the operator's credentials."""
    return kubernetes.client.CustomObjectsApi(_api_client())


def admissionregistration() -> Any:
    """admissionregistration.k8s.io/v1 (the webhook's configuration)."""
    return kubernetes.client.AdmissionregistrationV1Api(_api_client())


def as_dict(obj: Any) -> dict[str, Any]:
    """A typed client object as the plain JSON-shaped dict the API returned."""
    plain: dict[str, Any] = _api_client().sanitize_for_serialization(obj)
    return plain


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call (None: not an API error)."""
    if isinstance(exc, kubernetes.client.exceptions.ApiException):
        return int(exc.status) if exc.status is not None else None
    return None


def kube_access() -> KubeAccess:
    """The apiserver as the channel's VSOCK transport reaches it (the operator's own
    credentials)."""
    return KubeAccess.from_configuration(_api_client().configuration)
