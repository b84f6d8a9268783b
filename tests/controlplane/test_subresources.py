"""KubeVirt's subresource API (`subresources.kubevirt.io/v1`) served by the simulator.

Every request goes through the kube-apiserver's aggregation layer, as on a real cluster:
discovery, `kubectl --raw` PUT/GET, the Python client as ordinary users whose RBAC the
apiserver checks, and the vsock websocket proxied to a TCP server inside a guest. What
each endpoint did is checked where it shows: the VM's spec and status, the VMI, and the
guest's own processes.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from kubevirtkit import (
    FAULT,
    SUB,
    Client,
    Namespace,
    guest_pids,
    kubeconfig_parts,
    vm_manifest,
    wait_for,
)

pytestmark = pytest.mark.controlplane

PORT = 7000


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any) -> Iterator[Namespace]:
    name = f"sub-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    yield Namespace(kube, name)
    kube.kubectl("delete", "namespace", name, "--timeout=120s")


@pytest.fixture(scope="module")
def echo_vm(ns: Namespace) -> str:
    """A runStrategy Always VM with VSOCK whose guest runs the echo server (started once:
    tests that power it off restore it)."""
    ns.apply(vm_manifest("echo", port=PORT))
    ns.token(ns.running("echo"), PORT)
    return "echo"


def user(kube: Any, ns: Namespace, name: str, *roles: str) -> Path:
    """A kubeconfig for a new ordinary user, bound in the namespace to the given roles."""
    assert kube.local is not None
    path: Path = kube.local.control_plane.user_kubeconfig(name)
    for role in roles:
        ns.kubectl(
            "create",
            "rolebinding",
            f"{name}-{role.replace(':', '-')}",
            f"--clusterrole={role}",
            f"--user={name}",
        )
    return path


def status_body(result: Any) -> str:
    return str(result.stderr) + str(result.stdout)


# --- registration and discovery ----------------------------------------------------------
def test_apiservice_is_available_and_discovery_lists_the_subresources(
    simulator: Any, kube: Any
) -> None:
    def available() -> bool:
        out = kube.kubectl(
            "get", "apiservice", "v1.subresources.kubevirt.io", "-o", "json", check=False
        )
        if out.returncode != 0:
            return False
        conds = json.loads(out.stdout).get("status", {}).get("conditions") or []
        return any(c["type"] == "Available" and c["status"] == "True" for c in conds)

    wait_for("APIService Available", available)
    assert "subresources.kubevirt.io/v1" in kube.kubectl("api-versions").stdout.split()
    resources = json.loads(kube.kubectl("get", "--raw", SUB).stdout)["resources"]
    verbs = {r["name"]: r["verbs"] for r in resources}
    for action in ("start", "stop", "restart", "migrate"):
        assert verbs[f"virtualmachines/{action}"] == ["update"]
    assert verbs["virtualmachineinstances/guestosinfo"] == ["get"]
    assert verbs["virtualmachineinstances/vsock"] == ["get"]


def test_only_the_front_proxy_reaches_the_server(simulator: Any, kube: Any) -> None:
    """Directly, without the apiserver's front-proxy certificate, the TLS handshake fails:
    neither an anonymous client nor the cluster admin's certificate gets in."""
    svc = json.loads(
        kube.kubectl("get", "apiservice", "v1.subresources.kubevirt.io", "-o", "json").stdout
    )
    port = int(svc["spec"]["service"]["port"])
    assert kube.local is not None
    pki = kube.local.control_plane.pki
    for cert in (None, (pki / "admin.crt", pki / "admin.key")):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)),
            ctx.wrap_socket(raw) as tls,
        ):
            tls.sendall(f"GET {SUB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if not tls.recv(100):
                raise ConnectionResetError("closed without an answer")


# --- start / stop / restart / migrate ------------------------------------------------------
def test_stop_halts_an_always_vm_and_start_runs_it_again(ns: Namespace, echo_vm: str) -> None:
    vmi = ns.running(echo_vm)
    token = ns.token(vmi, PORT)
    assert guest_pids(token)
    dry = ns.put_raw(ns.vm_path(echo_vm, "stop"), {"dryRun": ["All"]})
    assert dry.returncode == 0, status_body(dry)
    vm = ns.get("vm", echo_vm)
    assert vm is not None and vm["spec"]["runStrategy"] == "Always"

    stop = ns.put_raw(ns.vm_path(echo_vm, "stop"), {"gracePeriod": 2})
    assert stop.returncode == 0, status_body(stop)
    vm = ns.get("vm", echo_vm)
    assert vm is not None and vm["spec"]["runStrategy"] == "Halted"
    ns.gone("vmi", echo_vm)
    wait_for("the guest's processes gone", lambda: not guest_pids(token), 10)
    again = ns.put_raw(ns.vm_path(echo_vm, "stop"))
    assert again.returncode != 0 and "VM is not running" in again.stderr
    assert "(Conflict)" in again.stderr

    start = ns.put_raw(ns.vm_path(echo_vm, "start"))
    assert start.returncode == 0, status_body(start)
    vm = ns.get("vm", echo_vm)
    assert vm is not None and vm["spec"]["runStrategy"] == "Always"
    new = ns.running(echo_vm, other_than=vmi["metadata"]["uid"])
    new_token = ns.token(new, PORT)
    assert new_token != token and guest_pids(new_token)
    twice = ns.put_raw(ns.vm_path(echo_vm, "start"))
    assert twice.returncode != 0 and "VM is already running" in twice.stderr


def test_stop_with_grace_period_patches_the_vmi_before_it_is_deleted(ns: Namespace) -> None:
    """A guest with a service that ignores SIGTERM shuts down for as long as its grace
    period lasts: the stop's (1 s), not the VMI's own (60 s), since virt-api patches it into
    the VMI's spec before the VMI is deleted."""
    ns.apply(vm_manifest("slow", grace=60, vsock=False, stubborn=True))
    vmi = ns.running("slow")
    token = ns.token(vmi, PORT)
    t0 = time.monotonic()
    assert ns.put_raw(ns.vm_path("slow", "stop"), {"gracePeriod": 1}).returncode == 0
    ns.gone("vmi", "slow", timeout=20)
    assert time.monotonic() - t0 < 10
    assert not guest_pids(token)


def test_refusals_carry_kubevirts_codes_and_messages(ns: Namespace, echo_vm: str) -> None:
    missing = ns.put_raw(ns.vm_path("no-such-vm", "stop"))
    assert "(NotFound)" in missing.stderr
    assert 'virtualmachine.kubevirt.io "no-such-vm" not found' in missing.stderr
    bad = ns.put_raw(ns.vm_path(echo_vm, "stop"), {"gracePeriod": "soon"})
    assert "(BadRequest)" in bad.stderr and "gracePeriod" in bad.stderr
    assert "Can not unmarshal Request body to struct" in bad.stderr
    forced = ns.put_raw(ns.vm_path(echo_vm, "restart"), {"gracePeriodSeconds": 5})
    assert "only gracePeriod=0 is supported" in forced.stderr
    always = ns.put_raw(ns.vm_path(echo_vm, "start"))
    assert "VM is already running" in always.stderr
    missing_vmi = ns.kubectl("get", "--raw", ns.vmi_path("no-such-vm", "guestosinfo"), check=False)
    assert 'virtualmachineinstance.kubevirt.io "no-such-vm" not found' in missing_vmi.stderr


def test_manual_vm_start_and_stop_go_through_state_change_requests(ns: Namespace) -> None:
    ns.apply(vm_manifest("manual", strategy="Manual", vsock=False))
    time.sleep(0.5)
    assert ns.get("vmi", "manual") is None
    assert ns.put_raw(ns.vm_path("manual", "start")).returncode == 0
    vmi = ns.running("manual")
    stop = ns.put_raw(ns.vm_path("manual", "stop"))
    assert stop.returncode == 0, status_body(stop)
    ns.gone("vmi", "manual", vmi["metadata"]["uid"])
    vm = ns.get("vm", "manual")
    assert vm is not None and vm["spec"]["runStrategy"] == "Manual"
    stopped = ns.put_raw(ns.vm_path("manual", "stop"))
    assert "VM is not running" in stopped.stderr


def test_restart_gives_a_new_vmi_and_a_new_guest(ns: Namespace, echo_vm: str) -> None:
    vmi = ns.running(echo_vm)
    token = ns.token(vmi, PORT)
    result = ns.put_raw(ns.vm_path(echo_vm, "restart"), {"gracePeriodSeconds": 0})
    assert result.returncode == 0, status_body(result)
    new = ns.running(echo_vm, other_than=vmi["metadata"]["uid"])
    assert ns.token(new, PORT) != token
    wait_for("the old guest gone", lambda: not guest_pids(token), 10)


def test_migrate_creates_a_migration(ns: Namespace, echo_vm: str) -> None:
    ns.running(echo_vm)
    assert ns.put_raw(ns.vm_path(echo_vm, "migrate"), {"dryRun": ["All"]}).returncode == 0
    assert ns.put_raw(ns.vm_path(echo_vm, "migrate")).returncode == 0
    items = json.loads(ns.kubectl("get", "virtualmachineinstancemigrations", "-o", "json").stdout)[
        "items"
    ]
    assert len(items) == 1  # the dry run created nothing
    assert items[0]["metadata"]["name"].startswith("kubevirt-migrate-vm-")
    assert items[0]["spec"]["vmiName"] == echo_vm


def test_guestosinfo_answers_from_the_guest_agent(ns: Namespace, echo_vm: str) -> None:
    vmi = ns.running(echo_vm)
    wait_for(
        "AgentConnected",
        lambda: any(
            c["type"] == "AgentConnected"
            for c in (ns.get("vmi", echo_vm) or {}).get("status", {}).get("conditions", [])
        ),
    )
    info = json.loads(ns.kubectl("get", "--raw", ns.vmi_path(echo_vm, "guestosinfo")).stdout)
    assert info["hostname"] == echo_vm
    release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    assert info["os"]["id"] == release["ID"].strip('"')
    assert info["os"]["kernelRelease"] == os.uname().release
    assert info["guestAgentVersion"] and info["timezone"]
    assert vmi["metadata"]["name"] == echo_vm


# --- the Python client as ordinary users: the apiserver checks RBAC first ----------------
def test_python_client_needs_the_subresource_verb(kube: Any, ns: Namespace, echo_vm: str) -> None:
    ns.running(echo_vm)
    nobody = Client(user(kube, ns, f"nobody-{ns.name}"))
    viewer = Client(user(kube, ns, f"viewer-{ns.name}", "kubevirt.io:view"))
    editor = Client(user(kube, ns, f"editor-{ns.name}", "kubevirt.io:edit"))
    stop = ns.vm_path(echo_vm, "stop")

    code, body = nobody.call("PUT", stop, {"dryRun": ["All"]})
    assert code == 403, body
    assert 'cannot update resource "virtualmachines/stop"' in body["message"]
    code, body = viewer.call("PUT", stop, {"dryRun": ["All"]})
    assert code == 403, body
    code, body = viewer.call("GET", ns.vmi_path(echo_vm, "guestosinfo"))
    assert code == 200 and body["hostname"] == echo_vm
    code, body = editor.call("PUT", stop, {"dryRun": ["All"]})
    assert code == 202, body
    code, body = editor.call("PUT", ns.vm_path("no-such-vm", "start"), {})
    assert code == 404 and body["reason"] == "NotFound"
    code, body = editor.call("PUT", ns.vm_path(echo_vm, "start"), {})
    assert code == 409 and body["message"].endswith("VM is already running")


# --- vsock -------------------------------------------------------------------------------
def _vsock(kubeconfig: Path, path: str, tmp: Path) -> websocket.WebSocket:
    server, options = kubeconfig_parts(kubeconfig, tmp)
    return websocket.create_connection(
        server.replace("https://", "wss://") + path,
        subprotocols=["plain.kubevirt.io"],
        timeout=10,
        **options,
    )


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def test_vsock_round_trips_bytes_to_a_port_in_the_guest(
    kube: Any, ns: Namespace, echo_vm: str, tmp_path: Path
) -> None:
    token = ns.token(ns.running(echo_vm), PORT)
    path = ns.vmi_path(echo_vm, "vsock") + f"?port={PORT}&tls=false"
    conn = _vsock(kube.kubeconfig, path, tmp_path)
    try:
        assert conn.subprotocol == "plain.kubevirt.io"
        greeting = b""
        while not greeting.endswith(b"\n"):
            greeting += _bytes(conn.recv())
        assert greeting.decode().strip() == token
        payload = os.urandom(200_000)
        conn.send_binary(payload)
        echoed = b""
        while len(echoed) < len(payload):
            echoed += _bytes(conn.recv())
        assert echoed == payload
    finally:
        conn.close()


def test_vsock_refuses_an_unknown_port_a_vmi_without_vsock_and_a_caller_without_rbac(
    kube: Any, ns: Namespace, echo_vm: str, tmp_path: Path
) -> None:
    ns.running(echo_vm)
    with pytest.raises(websocket.WebSocketBadStatusException) as closed:
        _vsock(kube.kubeconfig, ns.vmi_path(echo_vm, "vsock") + "?port=7999&tls=false", tmp_path)
    assert closed.value.status_code == 400
    assert b"VSOCK port 7999" in (closed.value.resp_body or b"")
    with pytest.raises(websocket.WebSocketBadStatusException) as bad_port:
        _vsock(kube.kubeconfig, ns.vmi_path(echo_vm, "vsock") + "?port=seven", tmp_path)
    assert bad_port.value.status_code == 400
    ns.apply(vm_manifest("novsock", vsock=False))
    ns.running("novsock")
    with pytest.raises(websocket.WebSocketBadStatusException) as unattached:
        _vsock(kube.kubeconfig, ns.vmi_path("novsock", "vsock") + f"?port={PORT}", tmp_path)
    assert unattached.value.status_code == 400
    assert b"VSOCK is not attached." in (unattached.value.resp_body or b"")
    editor = user(kube, ns, f"vsock-editor-{ns.name}", "kubevirt.io:edit")
    with pytest.raises(websocket.WebSocketBadStatusException) as denied:
        _vsock(editor, ns.vmi_path(echo_vm, "vsock") + f"?port={PORT}&tls=false", tmp_path)
    assert denied.value.status_code == 403
    granted = user(kube, ns, f"vsock-user-{ns.name}", "kubevirt.io:vsock")
    _vsock(granted, ns.vmi_path(echo_vm, "vsock") + f"?port={PORT}&tls=false", tmp_path).close()


# --- node rules ----------------------------------------------------------------------------
def test_a_stop_on_an_unresponsive_node_confirms_nothing(
    kube: Any, ns: Namespace, echo_vm: str
) -> None:
    vmi = ns.running(echo_vm)
    token = ns.token(vmi, PORT)
    node = vmi["status"]["nodeName"]
    kube.kubectl("annotate", "node", node, f"{FAULT}=Unresponsive", "--overwrite")
    try:
        assert ns.put_raw(ns.vm_path(echo_vm, "stop"), {"gracePeriod": 0}).returncode == 0
        time.sleep(2)
        held = ns.get("vmi", echo_vm)
        assert held is not None and held["metadata"].get("deletionTimestamp")
        assert held["status"]["phase"] == "Running"  # frozen: nobody on the node answers
        assert held["spec"]["terminationGracePeriodSeconds"] == 0  # the stop's grace
        assert guest_pids(token), "the guest must run on while its node does not answer"
    finally:
        kube.kubectl("annotate", "node", node, f"{FAULT}-")
    ns.gone("vmi", echo_vm)
    wait_for("the guest's processes gone", lambda: not guest_pids(token), 10)
    assert ns.put_raw(ns.vm_path(echo_vm, "start")).returncode == 0
    ns.token(ns.running(echo_vm), PORT)
