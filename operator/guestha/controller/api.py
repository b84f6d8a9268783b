"""The operator's own writes to the Kubernetes API, outside kopf's handler patches.

kopf applies a handler's `patch` only for change handlers and timers; daemons and the
webhook write through these calls: plain JSON by path over guestha's own client
(kubevirt/kubeapi.py), never the `kubernetes` package, which the operator process does not
load (controller/nokube.py says why). The blocking calls run in a thread of the caller's
choosing (`asyncio.to_thread`) to keep the loop free; each raises kubeapi.ApiError.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

from guestha.channel.transport import KubeAccess
from guestha.kubevirt import kubeapi

GROUP, VERSION = "guestha.io", "v1alpha1"
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def secrets_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{quote(namespace)}/secrets"
    return base if name is None else f"{base}/{quote(name)}"


def namespace_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}"


def custom_path(group: str, version: str, namespace: str, plural: str,
                name: str | None = None) -> str:
    base = f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}"
    return base if name is None else f"{base}/{quote(name)}"


def request(method: str, path: str, body: Any = None,
            content_type: str = kubeapi.JSON) -> dict[str, Any]:
    """Blocking: one call with the operator's credentials; the JSON object answered."""
    answer = kubeapi.call_sync(kubeapi.default_client(), method, path, body,
                               content_type=content_type)
    return cast(dict[str, Any], answer if isinstance(answer, dict) else {})


def get(path: str) -> dict[str, Any] | None:
    """Blocking: the object at `path`, None when there is none (404)."""
    try:
        return request("GET", path)
    except kubeapi.ApiError as e:
        if e.not_found:
            return None
        raise


async def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch the status subresource of one guestha object."""
    path = custom_path(GROUP, VERSION, namespace, plural, name) + "/status"
    await kubeapi.call("PATCH", path, {"status": status}, content_type=kubeapi.MERGE_PATCH)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call (0: no answer; None: not an API error)."""
    if isinstance(exc, kubeapi.ApiError):
        return exc.status
    return None


def kube_access() -> KubeAccess:
    """The apiserver as the channel's VSOCK transport reaches it (the operator's own
    credentials; the bearer token as it is now)."""
    creds = kubeapi.default_client().credentials
    return KubeAccess.from_credentials(creds.server, creds.context, creds.headers(),
                                       creds.proxy)
