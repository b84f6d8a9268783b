"""Raw Kubernetes API calls for the operator, awaited without blocking its event loop.

Fencing, leadership and the Service endpoints need exactly the calls the apiserver
documents: a JSON patch with a `test` operation, a DELETE with preconditions, an update
guarded by resourceVersion, a server-side apply with a field manager. The generated
`kubernetes` client spells each of these differently per kind, and not all of them, so
this module sends them by path through its `ApiClient` (the same credentials: in-cluster
token or kubeconfig) and returns plain JSON. Each call runs in the default executor
(`asyncio.to_thread`, as `controller/api.py` does): no thread of its own per anything,
except for a caller with a deadline that must not queue behind the process's other calls
(the leader's Lease renewal), which passes an executor of its own.

Every call has a timeout: a request that hangs (an apiserver behind a partition) fails
with `ApiError(0, "Timeout", ...)` instead of holding its caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
from collections.abc import Mapping
from typing import Any

import kubernetes

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply; JSON is valid YAML
FIELD_MANAGER = "guestha"  # the field manager of every write the operator makes

DEFAULT_TIMEOUT = 10.0  # seconds a call may take, unless its caller says otherwise


class ApiError(Exception):
    """The apiserver refused a call (status >= 400), or the call failed without an
    answer (status 0: connection error or timeout)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a resourceVersion or uid precondition failed, or the object exists."""
        return self.status == 409


@functools.cache
def default_client() -> Any:
    """The process's `kubernetes.client.ApiClient`: in-cluster credentials when running in
    a pod, the kubeconfig (KUBECONFIG or ~/.kube/config) otherwise."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


def client_from_kubeconfig(path: str) -> Any:
    """An `ApiClient` for one kubeconfig file (tests, tools): not the process default."""
    return kubernetes.config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]


def _decode(data: Any) -> Any:
    text = data.decode() if isinstance(data, bytes) else str(data or "")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_sync(
    client: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = JSON,
    query: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """One request, blocking; the decoded JSON answer. Raises ApiError."""
    params = client.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params={"Content-Type": content_type, "Accept": JSON},
        body=body,
        auth_settings=["BearerToken"],
    )
    try:
        response = client.call_api(*params, _request_timeout=timeout).response
    except kubernetes.client.exceptions.ApiException as exc:
        answer = _decode(exc.body)
        status = int(exc.status or 0)
        if isinstance(answer, dict):
            raise ApiError(status, str(answer.get("reason") or exc.reason),
                           str(answer.get("message") or "")) from None
        raise ApiError(status, str(exc.reason or ""), str(answer or "")) from None
    except Exception as exc:  # urllib3: connection refused, read timeout, TLS
        raise ApiError(0, "Timeout" if "timed out" in str(exc).lower() else "Unreachable",
                       str(exc)) from None
    status = int(response.status)
    data = _decode(response.data)
    if status >= 400:
        if isinstance(data, dict):
            raise ApiError(status, str(data.get("reason") or ""), str(data.get("message") or data))
        raise ApiError(status, "", str(data or ""))
    return data


async def call(
    method: str,
    path: str,
    body: Any = None,
    *,
    client: Any = None,
    content_type: str = JSON,
    query: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    executor: concurrent.futures.Executor | None = None,
) -> Any:
    """`call_sync` in the default executor (or `executor`), with the process client unless
    one is given."""
    api = client if client is not None else default_client()
    run = functools.partial(call_sync, api, method, path, body, content_type=content_type,
                            query=query, timeout=timeout)
    if executor is None:
        return await asyncio.to_thread(run)
    return await asyncio.get_running_loop().run_in_executor(executor, run)
