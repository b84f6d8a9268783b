"""The operator as a pod runs it: no kubeconfig, the service account mounted at
/var/run/secrets/kubernetes.io/serviceaccount and the apiserver at KUBERNETES_SERVICE_HOST
and _PORT. Both of the process's clients must use them: guestha's own (elections, status)
and kopf's (the watches that start every controller). kopf's own in-pod reader dials the
DNS name kubernetes.default.svc instead, which this host (like a pod on the host network)
cannot resolve: before controller/login.py the operator elected itself and then saw no
object at all.

The operator process runs in a mount namespace of its own (unshare), where a tmpfs over
/run holds the service-account folder, so the host is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.devcluster import OPERATOR

pytestmark = pytest.mark.controlplane

IN_POD = "guestha-in-pod"
TIMEOUT = 60.0
# mount a private /run, put the service account where a pod has it, run the rest
MOUNT_AS_A_POD = (
    "set -e; mount -t tmpfs tmpfs /run; "
    "mkdir -p /run/secrets/kubernetes.io/serviceaccount; "
    'mount --bind "$0" /run/secrets/kubernetes.io/serviceaccount; exec "$@"')


def halted_vm(name: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "labels": {"ha": "pod"}},
            "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
                "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}}


@pytest.fixture
def in_pod(kube: Any, tmp_path: Path) -> Iterator[str]:
    """The operator started as a pod (the session's operator stopped meanwhile: two
    operators elect one leader, and this one must be it); yields its log's path."""
    if kube.local is None:
        pytest.skip("runs an operator process on the local control plane")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a mount namespace")
    local = kube.local
    local.operator_kubeconfig()  # the operator's namespace, ServiceAccount and RBAC
    account = tmp_path / "serviceaccount"
    account.mkdir()
    token = kube.kubectl("create", "token", "guestha-operator", "-n", "guestha-system",
                         "--duration=1h").stdout.strip()
    (account / "token").write_text(token)
    shutil.copy(local.control_plane.pki / "ca.crt", account / "ca.crt")
    (account / "namespace").write_text("guestha-system")
    server = urllib.parse.urlsplit(local.control_plane.server)
    session_operator = OPERATOR in local.control_plane.state().pids
    local.stop_process(OPERATOR)
    try:
        local.start_operator(
            timeout=TIMEOUT, name=IN_POD, kubeconfig=tmp_path / "no-kubeconfig",
            env={"KUBERNETES_SERVICE_HOST": str(server.hostname),
                 "KUBERNETES_SERVICE_PORT": str(server.port)},
            wrapper=["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     MOUNT_AS_A_POD, str(account)])
        yield str(local.log_of(IN_POD))
    finally:
        local.stop_process(IN_POD)
        if session_operator:
            local.start_operator(timeout=TIMEOUT)


def test_in_a_pod_the_operator_and_kopf_use_the_service_account(
        kube: Any, in_pod: str) -> None:
    ns = f"pod-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    try:
        kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "List",
            "items": [halted_vm("pod-a"), halted_vm("pod-b")]}))
        kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
            "apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": "pod"},
            "spec": {"memberSelector": {"matchLabels": {"ha": "pod"}}}}))
        deadline = time.monotonic() + TIMEOUT
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = json.loads(kube.kubectl("get", "igc", "pod", "-n", ns, "-o", "json").stdout)
            members = (body.get("status") or {}).get("members") or []
            if len(members) == 2 and body["metadata"].get("finalizers"):
                break
            time.sleep(0.3)
        else:
            log = Path(in_pod).read_text()[-3000:]
            raise AssertionError(f"the in-pod operator never handled the cluster: "
                                 f"{json.dumps(body)[:1500]}\n--- its log:\n{log}")
        # kopf's watch saw it (its daemon wrote the status) and kopf's own PATCH put the
        # finalizers on; both as the service account (the operator's RBAC lets it)
        assert [(m["name"], m["phase"]) for m in body["status"]["members"]] == [
            ("pod-a", "Stopped"), ("pod-b", "Stopped")]
        assert "kubernetes.default.svc" not in Path(in_pod).read_text()
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
