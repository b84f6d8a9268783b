"""The KubeVirt simulator against a real apiserver with KubeVirt's CRDs.

What guestha relies on is checked the way guestha sees it: through the API (VM and VMI
status, Events, Node annotations) and from the host over the guest's network (a server
that the guest's cloud-init script started). Each test works in a namespace of its own.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubevirtkit
import pytest
import yaml
from kubevirtkit import FAULT, Namespace, has_condition, wait_for

from kits import simguests
from kubevirtsim.simulator import NETWORK_KEPT
from testbed.controlplane import NODE_MONITOR_GRACE_SECONDS, NODE_MONITOR_PERIOD_SECONDS
from testbed.devcluster import KUBEVIRT_DIR

pytestmark = pytest.mark.controlplane

EXAMPLES = KUBEVIRT_DIR / "examples"
HEARTBEAT = "kubevirt.io/heartbeat"
UNREACHABLE = "node.kubernetes.io/unreachable"

# A cloud-init shell script: a small HTTP server that answers with a token made at boot
# (new for every guest), and powers the guest off on GET /poweroff. Its file name carries
# the token, so the host can find the guest's processes by their command line.
MARKER_SCRIPT = r"""#!/bin/sh
TOKEN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
cat > /tmp/marker-$TOKEN.py <<'PY'
import http.server, subprocess, sys
token, port = sys.argv[1], int(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = token.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/poweroff":
            subprocess.Popen(["systemctl", "poweroff"])
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
PY
if command -v systemd-run >/dev/null 2>&1; then
  systemd-run --unit=marker python3 /tmp/marker-$TOKEN.py $TOKEN @PORT@
else
  nohup python3 /tmp/marker-$TOKEN.py $TOKEN @PORT@ >/dev/null 2>&1 &
fi
"""

_ports = iter(range(18000 + os.getpid() % 1000 * 10, 65000))


# --- helpers -------------------------------------------------------------------------------
def marker_script(port: int) -> str:
    return MARKER_SCRIPT.replace("@PORT@", str(port))


def vm_manifest(name: str, strategy: str, port: int, **spec: Any) -> dict[str, Any]:
    template_spec: dict[str, Any] = {
        "domain": {"devices": {}, "memory": {"guest": "128Mi"}, "resources": {}},
        "terminationGracePeriodSeconds": 5,
        "volumes": [
            {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": marker_script(port)}}
        ],
    }
    template_spec.update(spec)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"kubevirt.io/vm": name}},
        "spec": {
            "runStrategy": strategy,
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name, "app": name}},
                "spec": template_spec,
            },
        },
    }


def address(vmi: dict[str, Any]) -> str:
    interfaces = vmi["status"].get("interfaces") or []
    assert interfaces and interfaces[0].get("ipAddress"), f"no address: {interfaces}"
    return str(interfaces[0]["ipAddress"])


def fetch(ip: str, port: int, path: str = "/", timeout: float = 2.0) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=timeout) as reply:
        return str(reply.read().decode())


def token_of(vmi: dict[str, Any], port: int, timeout: float = 90.0) -> str:
    """The boot token of the guest's marker server: proof that its cloud-init ran."""
    ip = address(vmi)

    def check() -> str | None:
        try:
            return fetch(ip, port)
        except OSError:
            return None

    token: str = wait_for(
        f"marker server on {ip}:{port}", check, timeout, interval=0.5, retry_failed=True
    )
    return token


def guest_pids(token: str) -> list[int]:
    """Host pids of processes whose command line names the guest's marker file."""
    return simguests.copies(f"marker-{token}".encode())


def crash_guest(token: str) -> None:
    """SIGKILL the guest host whose marker server carries `token`."""
    kubevirtkit.crash_guest(guest_pids(token))


def no_guest_processes(token: str) -> bool:
    return not guest_pids(token)


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def cluster(kube: Any, simulator: Any) -> Iterator[Namespace]:
    """A fresh namespace, deleted afterwards with everything in it (the namespace
    controller deletes its VMs and VMIs; the simulator powers their guests off)."""
    ns = f"sim-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", ns)
    c = Namespace(kube, ns, timeout=90, interval=0.2, retry_failed=True)
    yield c
    for node in ("node-1", "node-2", "node-3"):
        kube.kubectl("annotate", "node", node, f"{FAULT}-", check=False)
        kube.kubectl("taint", "node", node, "node.kubernetes.io/out-of-service-", check=False)
    kube.kubectl("delete", "namespace", ns, "--timeout=120s")
    assert kube.kubectl("get", "namespace", ns, check=False).returncode != 0


# --- tests ---------------------------------------------------------------------------------
def test_vm_always_boots_runs_cloud_init_and_restarts(
    cluster: Namespace, record_property: Any
) -> None:
    port = next(_ports)
    started = time.monotonic()
    cluster.apply(vm_manifest("web", "Always", port))
    vmi = cluster.running("web")
    running_after = time.monotonic() - started
    vmi = cluster.running("web", agent=True)
    agent_after = time.monotonic() - started
    record_property("vm_create_to_vmi_running_s", round(running_after, 3))
    record_property("vm_create_to_agent_connected_s", round(agent_after, 3))
    print(f"\nVM create -> VMI Running {running_after:.2f}s, AgentConnected {agent_after:.2f}s")

    meta = vmi["metadata"]
    assert meta["ownerReferences"][0]["kind"] == "VirtualMachine"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert "kubevirt.io/virtualMachineControllerFinalize" in meta["finalizers"]
    assert "foregroundDeleteVirtualMachine" in meta["finalizers"]
    assert meta["labels"]["app"] == "web"
    assert meta["labels"]["kubevirt.io/nodeName"] == vmi["status"]["nodeName"]
    iface = vmi["status"]["interfaces"][0]
    assert iface["name"] == "default" and iface["interfaceName"] == "eth0"
    assert iface["ipAddresses"] == [iface["ipAddress"]] and iface["mac"]
    assert has_condition(vmi, "Ready")
    phases = [p["phase"] for p in vmi["status"]["phaseTransitionTimestamps"]]
    assert phases == ["Pending", "Scheduling", "Scheduled", "Running"]

    token = token_of(vmi, port)
    served_after = time.monotonic() - started
    record_property("vm_create_to_cloud_init_server_s", round(served_after, 3))
    print(f"VM create -> the guest's cloud-init server answers {served_after:.2f}s")
    assert guest_pids(token)
    vm = cluster.wait_for(
        "VM status Running",
        lambda: (
            (v := cluster.get("vm", "web"))
            and v.get("status", {}).get("printableStatus") == "Running"
            and v["status"].get("ready")
            and v
        ),
    )
    assert vm["status"]["created"] is True and vm["status"]["runStrategy"] == "Always"
    assert has_condition(vm, "Ready")
    reasons = {e["reason"] for e in cluster.events("web")}
    assert {"SuccessfulCreate", "Started"} <= reasons

    # deleting the VMI powers its guest off; the VM gets a new VMI that boots again
    cluster.kubectl("delete", "vmi", "web", "--wait=false")
    cluster.wait_for("the old guest's processes gone", lambda: no_guest_processes(token), 30)
    new = cluster.running("web", other_than=meta["uid"], agent=True)
    new_token = token_of(new, port)
    assert new_token != token


def test_halted_removes_vmi_and_guest(cluster: Namespace) -> None:
    port = next(_ports)
    cluster.apply(vm_manifest("halt", "Always", port))
    vmi = cluster.running("halt", agent=True)
    token = token_of(vmi, port)
    cluster.kubectl(
        "patch", "vm", "halt", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}'
    )
    cluster.gone("vmi", "halt", timeout=60)
    cluster.wait_for("guest processes gone", lambda: no_guest_processes(token), 30)
    vm = cluster.wait_for(
        "VM Stopped",
        lambda: (
            (v := cluster.get("vm", "halt"))
            and v.get("status", {}).get("printableStatus") == "Stopped"
            and v
        ),
    )
    assert vm["status"]["created"] is False and vm["status"]["ready"] is False
    reasons = {e["reason"] for e in cluster.events("halt")}
    assert {"SuccessfulDelete", "ShuttingDown", "Stopped"} <= reasons
    # and the deprecated spec.running works too
    cluster.kubectl(
        "patch",
        "vm",
        "halt",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/runStrategy"},'
        '{"op":"add","path":"/spec/running","value":true}]',
    )
    cluster.running("halt", agent=True)


def test_deleting_a_vm_deletes_its_vmi_and_guest(cluster: Namespace) -> None:
    port = next(_ports)
    cluster.apply(vm_manifest("gone", "Always", port))
    vmi = cluster.running("gone", agent=True)
    token = token_of(vmi, port)
    vm = cluster.get("vm", "gone")
    assert vm is not None
    assert "kubevirt.io/virtualMachineControllerFinalize" in vm["metadata"]["finalizers"]
    cluster.kubectl("delete", "vm", "gone", "--timeout=60s")
    assert cluster.get("vm", "gone") is None
    cluster.gone("vmi", "gone", timeout=60)
    cluster.wait_for("guest processes gone", lambda: no_guest_processes(token), 30)


def test_deleting_a_vm_with_orphan_propagation_keeps_its_vmi(cluster: Namespace) -> None:
    port = next(_ports)
    cluster.apply(vm_manifest("keep", "Always", port))
    vmi = cluster.running("keep", agent=True)
    cluster.kubectl("delete", "vm", "keep", "--cascade=orphan", "--timeout=60s")
    assert cluster.get("vm", "keep") is None
    time.sleep(1)
    kept = cluster.get("vmi", "keep")
    assert kept is not None and kept["metadata"]["uid"] == vmi["metadata"]["uid"]
    assert not kept["metadata"].get("ownerReferences")
    assert kept["status"]["phase"] == "Running"
    token_of(kept, port)


def test_a_vmi_whose_vm_is_gone_is_collected_by_the_garbage_collector(
    cluster: Namespace,
) -> None:
    """KubeVirt's VMIs name their VM as controller owner; when that VM is gone,
    kube-controller-manager's garbage collector deletes the VMI, and the simulator powers
    its guest off. (The VMI has a name of its own, so no VM controller acts on it.)"""
    port = next(_ports)
    owner = vm_manifest("owner", "Halted", port)
    cluster.apply(owner)
    stored = cluster.get("vm", "owner")
    assert stored is not None
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "owner",
                "uid": stored["metadata"]["uid"], "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": owner["spec"]["template"]["spec"],
    }
    cluster.apply(vmi)
    running = cluster.running("dependent", agent=True)
    token = token_of(running, port)
    cluster.kubectl("delete", "vm", "owner", "--timeout=60s")
    cluster.gone("vmi", "dependent", timeout=60)
    cluster.wait_for("the dependent's guest gone", lambda: no_guest_processes(token), 30)


def test_rerun_on_failure_restarts_a_crash_but_not_a_shutdown(cluster: Namespace) -> None:
    port = next(_ports)
    cluster.apply(vm_manifest("rerun", "RerunOnFailure", port))
    vmi = cluster.running("rerun", agent=True)
    token = token_of(vmi, port)
    crash_guest(token)
    new = cluster.running("rerun", other_than=vmi["metadata"]["uid"], agent=True)
    assert any(e["reason"] == "Stopped" and e["type"] == "Warning" for e in cluster.events("rerun"))
    new_token = token_of(new, port)
    # the guest powers itself off: Succeeded, and the VM stays down
    fetch(address(new), port, "/poweroff")
    cluster.gone("vmi", "rerun", timeout=60)
    cluster.wait_for("guest processes gone", lambda: no_guest_processes(new_token), 30)
    time.sleep(2)
    assert cluster.get("vmi", "rerun") is None
    vm = cluster.get("vm", "rerun")
    assert vm is not None and vm["status"]["printableStatus"] == "Stopped"
    # one crash, one clean shutdown: the power-off was not taken for a second crash
    stopped = [e for e in cluster.events("rerun") if e["reason"] == "Stopped"]
    assert sum(e.get("count", 1) for e in stopped if e["type"] == "Warning") == 1
    assert any(e["type"] == "Normal" for e in stopped)


def test_manual_follows_state_change_requests(cluster: Namespace) -> None:
    port = next(_ports)
    cluster.apply(vm_manifest("manual", "Manual", port))
    time.sleep(2)
    assert cluster.get("vmi", "manual") is None
    cluster.kubectl(
        "patch",
        "vm",
        "manual",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"stateChangeRequests":[{"action":"Start"}]}}',
    )
    vmi = cluster.running("manual", agent=True)
    cluster.wait_for(
        "the Start request cleared",
        lambda: (
            not (cluster.get("vm", "manual") or {}).get("status", {}).get("stateChangeRequests")
        ),
    )
    token = token_of(vmi, port)
    # a crash is not restarted under Manual
    crash_guest(token)
    failed = cluster.wait_for(
        "VMI Failed",
        lambda: (
            (v := cluster.get("vmi", "manual"))
            and v.get("status", {}).get("phase") == "Failed"
            and v
        ),
    )
    assert failed["metadata"]["uid"] == vmi["metadata"]["uid"]
    # Stop request for that VMI: it is deleted and nothing starts
    stop = {"status": {"stateChangeRequests": [{"action": "Stop", "uid": vmi["metadata"]["uid"]}]}}
    cluster.kubectl(
        "patch", "vm", "manual", "--subresource=status", "--type=merge", "-p", json.dumps(stop)
    )
    cluster.gone("vmi", "manual", timeout=60)
    time.sleep(2)
    assert cluster.get("vmi", "manual") is None


def test_once_runs_once(cluster: Namespace) -> None:
    port = next(_ports)
    cluster.apply(vm_manifest("once", "Once", port))
    vmi = cluster.running("once", agent=True)
    crash_guest(token_of(vmi, port))
    failed = cluster.wait_for(
        "VMI Failed",
        lambda: (
            (v := cluster.get("vmi", "once")) and v.get("status", {}).get("phase") == "Failed" and v
        ),
    )
    assert failed["metadata"]["uid"] == vmi["metadata"]["uid"]
    time.sleep(2)
    still = cluster.get("vmi", "once")
    assert still is not None and still["metadata"]["uid"] == vmi["metadata"]["uid"]


def test_standalone_example_vmi_boots_and_deletes(cluster: Namespace) -> None:
    manifest = yaml.safe_load((EXAMPLES / "vmi-nocloud.yaml").read_text())
    cluster.apply(manifest)
    vmi = cluster.running("vmi-nocloud", agent=True)
    assert address(vmi)
    assert not vmi["metadata"].get("ownerReferences")
    assert vmi["metadata"]["finalizers"] == ["foregroundDeleteVirtualMachine"]
    cluster.kubectl("delete", "vmi", "vmi-nocloud", "--timeout=60s")
    assert cluster.get("vmi", "vmi-nocloud") is None


def test_user_data_from_a_secret_waits_for_the_secret(cluster: Namespace) -> None:
    port = next(_ports)
    vm = vm_manifest(
        "secret",
        "Always",
        port,
        volumes=[
            {
                "name": "cloudinitdisk",
                "cloudInitNoCloud": {"secretRef": {"name": "secret-userdata"}},
            }
        ],
    )
    cluster.apply(vm)

    def waiting() -> dict[str, Any] | None:
        vmi = cluster.get("vmi", "secret")
        if vmi is None or vmi.get("status", {}).get("phase") != "Scheduling":
            return None
        return vmi if has_condition(vmi, "Synchronized", "False") else None

    vmi = cluster.wait_for("VMI waiting for its Secret", waiting)
    cond = next(c for c in vmi["status"]["conditions"] if c["type"] == "Synchronized")
    assert cond["reason"] == "SecretNotFound" and "secret-userdata" in cond["message"]
    assert "SyncFailed" in {e["reason"] for e in cluster.events("secret")}
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "secret-userdata"},
            "data": {"userdata": base64.b64encode(marker_script(port).encode()).decode()},
        }
    )
    vmi = cluster.running("secret", agent=True)
    assert not has_condition(vmi, "Synchronized", "False")
    token_of(vmi, port)


def test_invalid_base64_fails_the_vmi(cluster: Namespace) -> None:
    cluster.apply(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": "bad"},
            "spec": {
                "domain": {"devices": {}, "memory": {"guest": "128Mi"}},
                "volumes": [
                    {
                        "name": "cloudinitdisk",
                        "cloudInitNoCloud": {"userDataBase64": "not base64 at all!"},
                    }
                ],
            },
        }
    )
    vmi = cluster.wait_for(
        "VMI Failed",
        lambda: (
            (v := cluster.get("vmi", "bad")) and v.get("status", {}).get("phase") == "Failed" and v
        ),
    )
    assert vmi["status"]["reason"] == "InvalidCloudInit"
    ready = next(c for c in vmi["status"]["conditions"] if c["type"] == "Ready")
    assert "userDataBase64" in ready["message"]


def test_vm_whose_vmis_fail_to_start_backs_off(cluster: Namespace) -> None:
    cluster.apply(
        vm_manifest(
            "loop",
            "Always",
            next(_ports),
            volumes=[{"name": "cloudinitdisk", "cloudInitNoCloud": {"userDataBase64": "%%%"}}],
        )
    )
    vm = cluster.wait_for(
        "VM in CrashLoopBackOff",
        lambda: (
            (v := cluster.get("vm", "loop"))
            and v.get("status", {}).get("printableStatus") == "CrashLoopBackOff"
            and v
        ),
    )
    failure = vm["status"]["startFailure"]
    assert failure["consecutiveFailCount"] >= 1 and failure["retryAfterTimestamp"]
    time.sleep(3)  # no hot loop: within the 10 s backoff no new VMI is made
    creates = [e for e in cluster.events("loop") if e["reason"] == "SuccessfulCreate"]
    assert sum(e.get("count", 1) for e in creates) == 1


def _pinned(cluster: Namespace, name: str, node: str, port: int) -> tuple[dict[str, Any], str]:
    cluster.apply(vm_manifest(name, "Always", port, nodeSelector={"kubernetes.io/hostname": node}))
    vmi = cluster.running(name, agent=True)
    assert vmi["status"]["nodeName"] == node
    return vmi, token_of(vmi, port)


def _ready(node: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def _lease(cluster: Namespace, node: str) -> dict[str, Any]:
    out = cluster.kube.kubectl("get", "lease", node, "-n", "kube-node-lease", "-o", "json")
    return dict(json.loads(out.stdout))


def _unreachable_taints(node: dict[str, Any]) -> set[str]:
    return {t["effect"] for t in node["spec"].get("taints") or [] if t["key"] == UNREACHABLE}


def test_a_node_that_stops_answering_is_not_ready_with_the_unreachable_taint(
    cluster: Namespace,
) -> None:
    """The simulated node renews its Lease and posts status as a kubelet does; when it
    stops answering, kube-controller-manager's node lifecycle controller, not the
    simulator, marks it Ready=Unknown with the unreachable taints after its grace period,
    and lifts them once the node answers again."""
    lease = _lease(cluster, "node-2")
    assert lease["spec"]["holderIdentity"] == "node-2"
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    cluster.wait_for("the Lease renewed", lambda: _lease(cluster, "node-2")["spec"][
        "renewTime"] != lease["spec"]["renewTime"], NODE_MONITOR_GRACE_SECONDS)
    node = cluster.node("node-2")
    assert (_ready(node)["status"], _ready(node)["reason"]) == ("True", "KubeletReady")
    assert not _unreachable_taints(node)
    cluster.kube.kubectl("annotate", "node", "node-2", f"{FAULT}=Unresponsive")
    time.sleep(1)  # a renewal under way may still land
    silent_since = _lease(cluster, "node-2")["spec"]["renewTime"]

    def marked() -> dict[str, Any] | None:
        n = cluster.node("node-2")
        ready = _ready(n)
        if ready["status"] != "Unknown" or _unreachable_taints(n) != {"NoSchedule", "NoExecute"}:
            return None
        return n

    node = cluster.wait_for("node-2 Ready=Unknown with the unreachable taints", marked,
                            timeout=3 * (NODE_MONITOR_GRACE_SECONDS + NODE_MONITOR_PERIOD_SECONDS))
    assert _ready(node)["reason"] == "NodeStatusUnknown"
    assert _lease(cluster, "node-2")["spec"]["renewTime"] == silent_since  # it is silent
    # answering again: the node posts Ready, the controller lifts the taints
    cluster.kube.kubectl("annotate", "node", "node-2", f"{FAULT}-")
    cluster.wait_for(
        "node-2 Ready without taints",
        lambda: (n := cluster.node("node-2")) and _ready(n)["status"] == "True"
        and not _unreachable_taints(n),
        timeout=3 * (NODE_MONITOR_GRACE_SECONDS + NODE_MONITOR_PERIOD_SECONDS),
    )


def test_unresponsive_node_keeps_deletion_pending_and_guest_running(cluster: Namespace) -> None:
    port = next(_ports)
    vmi, token = _pinned(cluster, "lost", "node-3", port)
    ip = address(vmi)
    cluster.kube.kubectl("annotate", "node", "node-3", f"{FAULT}=Unresponsive")
    time.sleep(1.5)
    beat = cluster.node("node-3")["metadata"]["annotations"][HEARTBEAT]
    cluster.kubectl("delete", "vmi", "lost", "--wait=false")
    time.sleep(4)
    assert cluster.node("node-3")["metadata"]["annotations"][HEARTBEAT] == beat
    pending = cluster.get("vmi", "lost")
    assert pending is not None and pending["metadata"]["uid"] == vmi["metadata"]["uid"]
    assert pending["metadata"].get("deletionTimestamp")
    assert pending["status"]["phase"] == "Running"  # frozen
    assert fetch(ip, port) == token  # the guest runs on
    other = cluster.node("node-1")["metadata"]["annotations"][HEARTBEAT]
    cluster.wait_for(
        "other nodes still beat",
        lambda: cluster.node("node-1")["metadata"]["annotations"][HEARTBEAT] != other,
        10,
    )
    # the node answers again: the deletion completes and the VM starts a new VMI
    cluster.kube.kubectl("annotate", "node", "node-3", f"{FAULT}-")
    cluster.wait_for("guest processes gone", lambda: no_guest_processes(token), 30)
    cluster.running("lost", other_than=vmi["metadata"]["uid"], agent=True)
    cluster.wait_for(
        "heartbeat again",
        lambda: cluster.node("node-3")["metadata"]["annotations"][HEARTBEAT] != beat,
        10,
    )


def test_force_removed_vmi_on_unresponsive_node_leaves_guest_running(cluster: Namespace) -> None:
    port = next(_ports)
    vmi, token = _pinned(cluster, "split", "node-2", port)
    ip = address(vmi)
    cluster.kube.kubectl("annotate", "node", "node-2", f"{FAULT}=Unresponsive")
    cluster.kubectl("delete", "vmi", "split", "--wait=false")
    time.sleep(1)
    cluster.kubectl(
        "patch", "vmi", "split", "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    cluster.gone("vmi", "split", uid=vmi["metadata"]["uid"], timeout=60)
    time.sleep(3)
    assert fetch(ip, port) == token  # split brain: the object is gone, the guest is not
    # the node comes back: virt-handler kills the orphan domain
    cluster.kube.kubectl("annotate", "node", "node-2", f"{FAULT}-")
    cluster.wait_for("orphan guest killed", lambda: no_guest_processes(token), 30)
    cluster.running("split", other_than=vmi["metadata"]["uid"], agent=True)


def test_fenced_node_kills_guests_and_fails_vmis(cluster: Namespace) -> None:
    port = next(_ports)
    vmi, token = _pinned(cluster, "fenced", "node-1", port)
    cluster.kube.kubectl("annotate", "node", "node-1", f"{FAULT}=Unresponsive")
    cluster.kubectl("delete", "vmi", "fenced", "--wait=false")
    time.sleep(2)
    assert cluster.get("vmi", "fenced") is not None
    cluster.kube.kubectl(
        "taint", "node", "node-1", "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute"
    )
    cluster.wait_for("fenced guest killed", lambda: no_guest_processes(token), 30)
    cluster.gone("vmi", "fenced", uid=vmi["metadata"]["uid"], timeout=60)


def test_simulator_sigterm_leaves_nothing_behind_and_restart_fails_lost_vmis(
    kube: Any, simulator: Any, tmp_path: Path
) -> None:
    """A second simulator run with a node and a namespace of its own: after SIGTERM its
    guest, netns and veth are gone; started again, it finds the VMI's guest gone (a node
    reboot) and fails the VMI."""
    ns = f"sim-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", ns)
    cluster = Namespace(kube, ns, timeout=90, interval=0.2, retry_failed=True)
    node = f"sigterm-{uuid.uuid4().hex[:6]}"
    hack = Path(__file__).resolve().parents[2] / "hack"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(hack), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    argv = [
        sys.executable,
        "-m",
        "kubevirtsim",
        "--kubeconfig",
        str(kube.kubeconfig),
        "--state-dir",
        str(tmp_path / "state"),
        "--nodes",
        node,
        "--namespace",
        ns,
        "--heartbeat-seconds",
        "1",
    ]
    log = (tmp_path / "sim.log").open("a")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    port = next(_ports)
    try:
        cluster.apply(
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstance",
                "metadata": {"name": "term"},
                "spec": {
                    "domain": {"devices": {}, "memory": {"guest": "128Mi"}},
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "volumes": [
                        {
                            "name": "cloudinitdisk",
                            "cloudInitNoCloud": {"userData": marker_script(port)},
                        }
                    ],
                },
            }
        )
        vmi = cluster.running("term", agent=True)
        assert vmi["status"]["nodeName"] == node
        token = token_of(vmi, port)
        records = [
            json.loads(p.read_text()) for p in (tmp_path / "state").glob("guests/*/guest.json")
        ]
        netns = [str(r["netns"]) for r in records if r.get("netns")]
        links = [str(r["veth"]) for r in records if r.get("veth")]
        assert netns and links
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert no_guest_processes(token)
        for name in netns:
            assert not Path(f"/run/netns/{name}").exists(), f"netns {name} left behind"
        for name in links:
            assert not Path(f"/sys/class/net/{name}").exists(), f"link {name} left behind"
        # The bridge is shared by every simulator run on this machine: it goes with the
        # last guest network, or stays because another run's guests use it, as the
        # simulator says. (Another run's guests may come and go meanwhile: judge the
        # simulator by what it saw, not by what is there now.)
        if Path("/sys/class/net/ghbr0").exists():
            assert NETWORK_KEPT in (tmp_path / "sim.log").read_text(), "bridge ghbr0 left behind"
        # the VMI still says Running (nobody was left to say otherwise) until the node's
        # simulator comes back: its guest is gone, as after a reboot
        assert (cluster.get("vmi", "term") or {})["status"]["phase"] == "Running"
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        failed = cluster.wait_for(
            "VMI Failed after the restart",
            lambda: (
                (v := cluster.get("vmi", "term")) and v["status"].get("phase") == "Failed" and v
            ),
        )
        assert failed["status"]["reason"] == "NodeRebooted"
        cluster.kubectl("delete", "vmi", "term", "--timeout=30s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        cluster.kubectl(
            "patch",
            "vmi",
            "term",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        cluster.kubectl("delete", "vmi", "term", "--wait=false", check=False)
        kube.kubectl("delete", "node", node, "--wait=false", check=False)
