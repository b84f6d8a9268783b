"""Raw Kubernetes API calls for the operator, awaited without blocking its event loop.

Fencing, leadership and the Service endpoints need exactly the calls the apiserver
documents: a JSON patch with a `test` operation, a DELETE with preconditions, an update
guarded by resourceVersion, a server-side apply with a field manager. The generated
`kubernetes` client spells each of these differently per kind, and not all of them, and
importing it costs the operator about 32 MB; so this module sends them by path over
urllib3 with guestha's own credentials (kubeconfig.py: in-cluster token or kubeconfig)
and returns plain JSON. Each call runs in the default executor
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
from urllib.parse import urlencode

import urllib3

from guestha.kubevirt import kubeconfig

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply; JSON is valid YAML
FIELD_MANAGER = "guestha"  # the field manager of every write the operator makes

DEFAULT_TIMEOUT = 10.0  # seconds a call may take, unless its caller says otherwise
# Keep-alive connections a client keeps to its apiserver: as many as asyncio's default
# executor has threads at most (min(32, CPUs + 4)), so a busy executor neither waits for a
# connection nor churns TLS handshakes (an idle TLS connection holds about 35 kB).
POOL_SIZE = 32


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


class Client:
    """A pool of keep-alive connections to one apiserver, safe to share between threads.

    At most POOL_SIZE connections are kept; a thread that finds none idle opens one more
    and closes it after its request (urllib3's non-blocking pool), so no call waits for a
    connection and the pool stays bounded. Connections are opened on demand: an idle
    process holds as many as it used at once. Nothing is retried: a PATCH or a DELETE
    must not be sent twice behind the caller's back, and the timeout is the caller's
    whole budget (a retried connect would multiply it); the callers retry at their pace.
    """

    def __init__(self, credentials: kubeconfig.Credentials, pool_size: int = POOL_SIZE) -> None:
        self.credentials = credentials
        kwargs: dict[str, Any] = {
            "maxsize": pool_size,
            "block": False,
            "retries": False,
            "ssl_context": credentials.context,
            "cert_reqs": "CERT_NONE" if credentials.insecure else "CERT_REQUIRED",
        }
        self.pool: urllib3.PoolManager = (
            urllib3.ProxyManager(credentials.proxy, **kwargs) if credentials.proxy
            else urllib3.PoolManager(**kwargs))

    @property
    def server(self) -> str:
        return self.credentials.server

    def close(self) -> None:
        self.pool.clear()


@functools.cache
def default_client() -> Client:
    """The process's client: in-cluster credentials when running in a pod, the kubeconfig
    (KUBECONFIG or ~/.kube/config) otherwise (see kubeconfig.load)."""
    return Client(kubeconfig.load())


def client_from_kubeconfig(path: str) -> Client:
    """A client for one kubeconfig file (tests, tools): not the process default."""
    return Client(kubeconfig.from_kubeconfig(path))


def _decode(data: Any) -> Any:
    text = data.decode() if isinstance(data, bytes) else str(data or "")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_sync(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = JSON,
    query: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """One request, blocking; the decoded JSON answer. Raises ApiError."""
    url = client.server + path  # callers quote names; the path may carry a query
    if query:
        url += ("&" if "?" in path else "?") + urlencode(list(query.items()))
    headers = {"Accept": JSON, **client.credentials.headers()}
    payload = None
    if body is not None:
        headers["Content-Type"] = content_type
        payload = json.dumps(body).encode()
    try:
        response = client.pool.request(method, url, body=payload, headers=headers,
                                       timeout=urllib3.Timeout(total=timeout),
                                       redirect=False, preload_content=True)
    except urllib3.exceptions.HTTPError as exc:  # connection refused, read timeout, TLS
        text = str(exc)
        # urllib3's NewConnectionError (refused, no route) subclasses its TimeoutError
        timed_out = "timed out" in text.lower() or (
            isinstance(exc, urllib3.exceptions.TimeoutError)
            and not isinstance(exc, urllib3.exceptions.NewConnectionError))
        raise ApiError(0, "Timeout" if timed_out else "Unreachable", text) from None
    status = int(response.status)
    data = _decode(response.data)
    if status >= 400:
        if isinstance(data, dict):
            raise ApiError(status, str(data.get("reason") or response.reason or ""),
                           str(data.get("message") or data))
        raise ApiError(status, str(response.reason or ""), str(data or ""))
    return data


async def call(
    method: str,
    path: str,
    body: Any = None,
    *,
    client: Client | None = None,
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
