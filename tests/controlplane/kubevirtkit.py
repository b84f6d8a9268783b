"""Helpers for tests that act on VMs through KubeVirt's subresource API.

A namespace per test module, VMs whose guest runs a small TCP server (it greets every
connection with a token made at boot, then echoes), requests through `kubectl --raw`
and through the Python client with any kubeconfig, and the guest's processes as the host
sees them (their command line carries the boot token).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException

from kits import simguests

SUB = "/apis/subresources.kubevirt.io/v1"
FAULT = "kubevirtsim.guestha.io/fault"

# cloud-init script: a TCP server on every address of the guest (loopback too, where the
# vsock endpoint reaches it); it sends "<token>\n" on connect, then echoes.
ECHO_SCRIPT = r"""#!/bin/sh
TOKEN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
cat > /tmp/echo-$TOKEN.py <<'PY'
import socket, sys, threading
token, port = sys.argv[1].encode(), int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", port))
server.listen(16)
def serve(conn):
    with conn:
        conn.sendall(token + b"\n")
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
systemd-run --unit=echo python3 /tmp/echo-$TOKEN.py $TOKEN @PORT@
"""


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    *,
    retry_failed: bool = False,
) -> Any:
    """Poll until check() returns something truthy; fail naming `what` otherwise. With
    retry_failed, a check that fails an assertion counts as "not yet" instead of failing."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError:
            if not retry_failed:
                raise
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def has_condition(obj: dict[str, Any], type_: str, status: str = "True") -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == status
        for c in obj.get("status", {}).get("conditions") or []
    )


# a service that ignores SIGTERM: the guest's shutdown lasts until the grace period ends
STUBBORN = "systemd-run --unit=stubborn sh -c 'trap \"\" TERM; while :; do sleep 1; done'\n"


def vm_manifest(
    name: str,
    strategy: str = "Always",
    port: int = 7000,
    vsock: bool = True,
    grace: int = 5,
    stubborn: bool = False,
) -> dict[str, Any]:
    script = ECHO_SCRIPT.replace("@PORT@", str(port)) + (STUBBORN if stubborn else "")
    devices: dict[str, Any] = {"autoattachVSOCK": True} if vsock else {}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": strategy,
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "domain": {"devices": devices, "memory": {"guest": "128Mi"}, "resources": {}},
                    "volumes": [
                        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": script}}
                    ],
                },
            },
        },
    }


def guest_pids(token: str) -> list[int]:
    """Host pids of the guest processes whose command line names the boot token."""
    return simguests.copies(f"echo-{token}".encode())


def crash_guest(pids: list[int]) -> None:
    """SIGKILL a guest host, given host pids of processes inside it: every process in their
    PID namespace (the guest's init included), or their session when the guest has none."""
    assert pids, "no process of the guest to crash"
    own_ns = os.readlink("/proc/self/ns/pid")
    guest_ns = os.readlink(f"/proc/{pids[0]}/ns/pid")
    victims: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if guest_ns != own_ns:
                if os.readlink(entry / "ns/pid") == guest_ns:
                    victims.append(int(entry.name))
            elif os.getsid(int(entry.name)) == os.getsid(pids[0]):
                victims.append(int(entry.name))
        except OSError:
            continue
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def greet(address: str, port: int, timeout: float = 1.0) -> str | None:
    """The token of the guest's server over the guest network, or None if it does not answer."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            return conn.makefile("rb").readline().decode().strip() or None
    except OSError:
        return None


class Namespace:
    """kubectl (as the admin) in one namespace, JSON in and out. Its waits poll every
    `interval` seconds for `timeout` seconds unless a call says otherwise; with retry_failed,
    a failed read is retried."""

    def __init__(
        self,
        kube: Any,
        name: str,
        *,
        timeout: float = 30.0,
        interval: float = 0.1,
        retry_failed: bool = False,
    ) -> None:
        self.kube = kube
        self.name = name
        self.timeout = timeout
        self.interval = interval
        self.retry_failed = retry_failed

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.kube.kubectl(
            "-n", self.name, *args, input=input, check=check
        )
        return result

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def events(self, name: str) -> list[dict[str, Any]]:
        """The namespace's Events about the object called `name`."""
        items = json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"]
        return [e for e in items if e["involvedObject"]["name"] == name]

    def node(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.kube.kubectl("get", "node", name, "-o", "json").stdout
        )
        return obj

    def put_raw(self, path: str, body: Any = None) -> subprocess.CompletedProcess[str]:
        """PUT through `kubectl replace --raw` (the only way kubectl PUTs a raw path)."""
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write(json.dumps(body if body is not None else {}))
            f.flush()
            result: subprocess.CompletedProcess[str] = self.kube.kubectl(
                "replace", "--raw", path, "-f", f.name, check=False
            )
            return result

    def vm_path(self, name: str, action: str) -> str:
        return f"{SUB}/namespaces/{self.name}/virtualmachines/{name}/{action}"

    def vmi_path(self, name: str, sub: str) -> str:
        return f"{SUB}/namespaces/{self.name}/virtualmachineinstances/{name}/{sub}"

    def wait_for(
        self,
        what: str,
        check: Callable[[], Any],
        timeout: float | None = None,
        interval: float | None = None,
    ) -> Any:
        """wait_for with this namespace's timeout, interval and retry_failed as defaults."""
        return wait_for(
            what,
            check,
            self.timeout if timeout is None else timeout,
            self.interval if interval is None else interval,
            retry_failed=self.retry_failed,
        )

    def running(
        self, name: str, other_than: str = "", timeout: float | None = None, agent: bool = False
    ) -> dict[str, Any]:
        """The VMI `name` once Running (a new one if other_than names the old one's uid), and,
        with agent, once its guest agent is connected."""

        def check() -> dict[str, Any] | None:
            vmi = self.get("vmi", name)
            if vmi is None or vmi["metadata"]["uid"] == other_than:
                return None
            if vmi.get("status", {}).get("phase") != "Running":
                return None
            if agent and not has_condition(vmi, "AgentConnected"):
                return None
            return vmi

        found: dict[str, Any] = self.wait_for(f"VMI {name} Running", check, timeout)
        return found

    def token(self, vmi: dict[str, Any], port: int, timeout: float | None = None) -> str:
        address = vmi["status"]["interfaces"][0]["ipAddress"]
        token: str = self.wait_for(
            f"the echo server of {vmi['metadata']['name']}",
            lambda: greet(address, port),
            timeout,
            0.2,
        )
        return token

    def gone(self, kind: str, name: str, uid: str = "", timeout: float | None = None) -> None:
        def check() -> bool:
            obj = self.get(kind, name)
            return obj is None or (bool(uid) and obj["metadata"]["uid"] != uid)

        self.wait_for(f"{kind} {name} gone", check, timeout)


class Client:
    """The Python `kubernetes` client with some kubeconfig: raw calls, status and body back."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = kconfig.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            body=body,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*params).response
            status, data = response.status, response.data
        except ApiException as exc:
            status, data = int(exc.status or 0), exc.body
        text = data.decode() if isinstance(data, bytes) else str(data or "")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text


def kubeconfig_parts(kubeconfig: Path, folder: Path) -> tuple[str, dict[str, Any]]:
    """The server URL and ssl options (CA, client certificate or token) of a kubeconfig,
    for a websocket client."""
    cfg = json.loads(kubeconfig.read_text())
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    options: dict[str, Any] = {"sslopt": {"ca_certs": str(folder / "ca.crt")}}
    if "client-certificate-data" in user:
        (folder / "client.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (folder / "client.key").write_bytes(base64.b64decode(user["client-key-data"]))
        options["sslopt"].update(
            certfile=str(folder / "client.crt"), keyfile=str(folder / "client.key")
        )
    if "token" in user:
        options["header"] = [f"Authorization: Bearer {user['token']}"]
    return str(cluster["server"]), options
