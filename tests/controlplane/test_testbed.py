"""The test bed itself: a real apiserver with KubeVirt's real schema, RBAC, and a clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from testbed import processes
from testbed.devcluster import DevCluster, shared_dir

pytestmark = pytest.mark.controlplane

EXAMPLES = sorted((shared_dir() / "kubevirt" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_kubevirt_example_is_accepted_by_the_real_schema(kube, example: Path) -> None:  # type: ignore[no-untyped-def]
    kube.kubectl("create", "--dry-run=server", "-n", "default", "-f", str(example))


def test_kubevirt_schema_refuses_a_bad_vm(kube) -> None:  # type: ignore[no-untyped-def]
    vm = yaml.safe_load((shared_dir() / "kubevirt" / "examples" / "vm-cirros.yaml").read_text())
    del vm["spec"]["template"]["spec"]["domain"]  # required by KubeVirt's schema
    vm["spec"]["runStrategy"] = 3  # a string in KubeVirt's schema
    result = kube.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-",
                          input=json.dumps(vm), check=False)
    assert result.returncode != 0
    assert "spec.template.spec.domain: Required value" in result.stderr
    assert "spec.runStrategy: Invalid value" in result.stderr


def test_kubectl_lists_every_kind(kube) -> None:  # type: ignore[no-untyped-def]
    result = kube.kubectl("get", "vm,vmi,igc,sg,swo", "-A")
    assert result.returncode == 0


def test_rbac_is_enforced(kube) -> None:  # type: ignore[no-untyped-def]
    if kube.local is None:
        pytest.skip("needs the local control plane's CA to mint a user")
    config = kube.local.control_plane.user_kubeconfig("jane", ("developers",))
    kubectl = kube.local.control_plane.kubectl
    denied = subprocess.run([*_kubectl(kube), "--kubeconfig", str(config), "get", "vm", "-A"],
                            capture_output=True, text=True)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    assert 'User "jane"' in denied.stderr
    kubectl("create", "clusterrole", "vm-reader", "--verb=get,list",
            "--resource=virtualmachines.kubevirt.io")
    kubectl("create", "clusterrolebinding", "jane-vm-reader", "--clusterrole=vm-reader",
            "--group=developers")
    allowed = subprocess.run([*_kubectl(kube), "--kubeconfig", str(config), "get", "vm", "-A"],
                             capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stderr


def _kubectl(kube) -> list[str]:  # type: ignore[no-untyped-def]
    from testbed import build

    return [str(build.binary("kubectl"))]


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_devcluster_up_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    """The whole devcluster, with a guest booted, stops without a trace."""
    if os.geteuid() != 0:
        pytest.skip("guest hosts need root")
    cluster = DevCluster(tmp_path / "whole")
    cluster.up()
    try:
        example = shared_dir() / "kubevirt" / "examples" / "vm-cirros.yaml"
        vm = yaml.safe_load(example.read_text())
        vm["spec"].pop("running", None)
        vm["spec"]["runStrategy"] = "Always"
        cluster.kubectl("apply", "-n", "default", "-f", "-", input=json.dumps(vm))
        deadline = time.monotonic() + 60  # kubectl wait gives up on an object not yet created
        while not cluster.kubectl("get", "vmi", "-n", "default", "-o", "name").stdout:
            assert time.monotonic() < deadline, "the VM got no VMI"
            time.sleep(0.1)
        cluster.kubectl("wait", "-n", "default", "vmi/vm-cirros", "--timeout=60s",
                        "--for=jsonpath={.status.phase}=Running")
        from kubevirtsim.guesthost import NETNS_PREFIX

        guests = cluster.sim_state / "guests"
        ours = {NETNS_PREFIX + d.name for d in guests.iterdir() if d.is_dir()}
        assert ours and ours <= _netns(), "the guest host has a network namespace"
        names = set(cluster.control_plane.state().pids)
        assert names == {"etcd", "kube-apiserver", "kubevirtsim", "guestha-operator"}
    finally:
        cluster.down()
    assert processes.referencing(str(tmp_path / "whole")) == []
    assert not ours & _netns()


def test_a_second_control_plane_starts_and_stops_leaving_nothing(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "second")
    cluster.up(simulator=False, operator=False)
    pids = dict(cluster.control_plane.state().pids)
    assert set(pids) == {"etcd", "kube-apiserver"}
    assert cluster.control_plane.get("/readyz") == b"ok"
    cluster.down()
    assert not any(processes.alive(pid) for pid in pids.values())
    assert cluster.control_plane.state().pids == {}
