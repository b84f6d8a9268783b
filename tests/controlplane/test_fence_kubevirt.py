"""Debian's fence_kubevirt, unchanged, against the testbed: a real KubeVirt client.

It runs with Debian's own python3 (its shebang) and a kubeconfig for a ServiceAccount that
holds only the ClusterRole of manifests/fencing/fence-kubevirt-rbac.yaml, bound in the test
namespace. What it reports and does is checked against the VM, the VMI and the guest's
processes as the host sees them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubevirtkit import FAULT, Namespace, guest_pids, vm_manifest, wait_for

from testbed import build

pytestmark = pytest.mark.controlplane

FENCE_KUBEVIRT = Path("/usr/sbin/fence_kubevirt")
RBAC = Path(__file__).resolve().parents[2] / "manifests" / "fencing" / "fence-kubevirt-rbac.yaml"
PORT = 7100
# fence-agents' exit codes: 0 success (status: on), 1 failure, 2 status off
ON, FAILED, OFF = 0, 1, 2


@pytest.fixture(scope="module")
def fence(
    kube: Any, simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Namespace, Path]]:
    """A namespace with a ServiceAccount bound to fence_kubevirt's ClusterRole, and a
    kubeconfig with its token."""
    if not FENCE_KUBEVIRT.exists():
        pytest.skip("fence_kubevirt is not installed (hack/setup installs fence-agents)")
    assert kube.local is not None
    name = f"fence-{uuid.uuid4().hex[:6]}"
    ns = Namespace(kube, name)
    kube.kubectl("create", "namespace", name)
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "ClusterRole")
    kube.kubectl("apply", "-f", "-", input=json.dumps(role))
    ns.kubectl("create", "serviceaccount", "fencer")
    ns.kubectl(
        "create",
        "rolebinding",
        "fencer",
        f"--clusterrole={role['metadata']['name']}",
        f"--serviceaccount={name}:fencer",
    )
    token = ns.kubectl("create", "token", "fencer", "--duration=2h").stdout.strip()
    config = tmp_path_factory.mktemp("fence") / "kubeconfig"
    kube.local.control_plane.write_token_kubeconfig(config, token, "fencer")
    yield ns, config
    kube.kubectl("delete", "namespace", name, "--timeout=120s")


def fence_kubevirt(
    config: Path, ns: Namespace, action: str, plug: str = "", *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        str(FENCE_KUBEVIRT),
        f"--kubeconfig={config}",
        f"--namespace={ns.name}",
        f"--action={action}",
        *extra,
    ]
    if plug:
        argv.append(f"--plug={plug}")
    # its own shebang: Debian's /usr/bin/python3 with python3-kubernetes and -openshift
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def vm(fence: tuple[Namespace, Path]) -> str:
    ns, _ = fence
    ns.apply(vm_manifest("member", port=PORT, vsock=False, grace=5))
    ns.token(ns.running("member"), PORT)
    return "member"


def test_list_and_status(fence: tuple[Namespace, Path], vm: str) -> None:
    ns, config = fence
    ns.apply(vm_manifest("halted", strategy="Halted", vsock=False))
    listed = fence_kubevirt(config, ns, "list")
    assert listed.returncode == 0, listed.stderr
    assert {line.split(",")[0] for line in listed.stdout.split()} == {"halted", vm}
    on = fence_kubevirt(config, ns, "status", vm)
    assert (on.returncode, on.stdout.strip()) == (ON, "Status: ON"), on.stderr
    off = fence_kubevirt(config, ns, "status", "halted")
    assert (off.returncode, off.stdout.strip()) == (OFF, "Status: OFF"), off.stderr
    missing = fence_kubevirt(config, ns, "status", "no-such-vm")
    assert missing.returncode == FAILED and "doesn't exist" in missing.stderr


def test_off_then_on(fence: tuple[Namespace, Path], vm: str) -> None:
    ns, config = fence
    vmi = ns.running(vm)
    token = ns.token(vmi, PORT)
    assert guest_pids(token)
    off = fence_kubevirt(config, ns, "off", vm)
    assert off.returncode == 0 and "Powered OFF" in off.stdout, off.stderr
    # confirmed: the VMI is gone and so is every process of the guest
    assert ns.get("vmi", vm) is None
    assert not guest_pids(token)
    obj = ns.get("vm", vm)
    assert obj is not None and obj["spec"]["runStrategy"] == "Halted"  # it stays off
    time.sleep(1)
    assert ns.get("vmi", vm) is None
    assert fence_kubevirt(config, ns, "status", vm).returncode == OFF

    on = fence_kubevirt(config, ns, "on", vm)
    assert on.returncode == 0 and "Powered ON" in on.stdout, on.stderr
    new = ns.running(vm, other_than=vmi["metadata"]["uid"])
    new_token = ns.token(new, PORT)
    assert new_token != token and guest_pids(new_token)


def test_reboot_gives_a_new_guest(fence: tuple[Namespace, Path], vm: str) -> None:
    ns, config = fence
    vmi = ns.running(vm)
    token = ns.token(vmi, PORT)
    reboot = fence_kubevirt(config, ns, "reboot", vm)
    assert reboot.returncode == 0 and "Rebooted" in reboot.stdout, reboot.stderr
    new = ns.running(vm, other_than=vmi["metadata"]["uid"])
    assert ns.token(new, PORT) != token
    assert not guest_pids(token)


def test_off_on_an_unresponsive_node_is_never_confirmed(
    kube: Any, fence: tuple[Namespace, Path], vm: str
) -> None:
    """The stop is accepted, but the VMI cannot go while its node does not answer: the
    agent times out (power timeout 3 s here) and the guest runs on, as it would."""
    ns, config = fence
    vmi = ns.running(vm)
    token = ns.token(vmi, PORT)
    node = vmi["status"]["nodeName"]
    kube.kubectl("annotate", "node", node, f"{FAULT}=Unresponsive", "--overwrite")
    try:
        off = fence_kubevirt(config, ns, "off", vm, "--power-timeout=3")
        assert off.returncode == FAILED, off.stdout + off.stderr
        assert guest_pids(token)
        assert ns.get("vmi", vm) is not None
    finally:
        kube.kubectl("annotate", "node", node, f"{FAULT}-")
    ns.gone("vmi", vm)
    wait_for("the guest gone", lambda: not guest_pids(token), 10)
    assert fence_kubevirt(config, ns, "on", vm).returncode == 0


def test_the_agent_has_no_more_rights_than_its_role(fence: tuple[Namespace, Path], vm: str) -> None:
    """The ServiceAccount can stop and start VMs, but not delete VMs or VMIs, nor read
    Secrets."""
    ns, config = fence

    def can(verb: str, resource: str, *extra: str) -> str:
        answer = subprocess.run(
            [
                str(build.binary("kubectl")),
                "--kubeconfig",
                str(config),
                "-n",
                ns.name,
                "auth",
                "can-i",
                verb,
                resource,
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        return answer.stdout.strip()

    assert can("update", "virtualmachines.subresources.kubevirt.io", "--subresource=stop") == "yes"
    assert (
        can("update", "virtualmachines.subresources.kubevirt.io", "--subresource=restart") == "no"
    )
    for verb, resource in (
        ("delete", "virtualmachines.kubevirt.io"),
        ("list", "secrets"),
        ("delete", "virtualmachineinstances.kubevirt.io"),
    ):
        assert can(verb, resource) == "no", (verb, resource)
