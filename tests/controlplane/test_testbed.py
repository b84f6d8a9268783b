"""The test bed itself: a real apiserver with KubeVirt's real schema, RBAC, the controllers
of kube-controller-manager that guestha relies on, and a clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from testbed import processes
from testbed.devcluster import KUBEVIRT_DIR, DevCluster, kubevirt_examples

pytestmark = pytest.mark.controlplane

EXAMPLES = kubevirt_examples()
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_kubevirt_example_is_accepted_by_the_real_schema(kube, example: Path) -> None:  # type: ignore[no-untyped-def]
    kube.kubectl("create", "--dry-run=server", "-n", "default", "-f", str(example))


def test_kubevirt_schema_refuses_a_bad_vm(kube) -> None:  # type: ignore[no-untyped-def]
    vm = yaml.safe_load((KUBEVIRT_DIR / "examples" / "vm-cirros.yaml").read_text())
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
        # up returned: what it started answers now, not seconds later (fence_kubevirt run
        # right after up used to get a 404 from the aggregated API)
        discovery = json.loads(cluster.control_plane.get("/apis/subresources.kubevirt.io/v1"))
        assert {"virtualmachines/stop", "virtualmachineinstances/vsock"} <= {
            r["name"] for r in discovery["resources"]}
        nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert nodes and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
            for n in nodes)
        status, health = cluster.control_plane.controller_manager_health()
        assert status == 200 and "[+]garbage-collector-controller ok" in health
        example = KUBEVIRT_DIR / "examples" / "vm-cirros.yaml"
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
        assert names == {"etcd", "kube-apiserver", "kube-controller-manager", "kubevirtsim",
                         "guestha-operator"}
    finally:
        cluster.down()
    assert processes.referencing(str(tmp_path / "whole")) == []
    assert not ours & _netns()


def test_a_second_control_plane_starts_and_stops_leaving_nothing(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "second")
    cluster.up(simulator=False, operator=False)
    pids = dict(cluster.control_plane.state().pids)
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert cluster.control_plane.get("/readyz") == b"ok"
    cluster.down()
    assert not any(processes.alive(pid) for pid in pids.values())
    assert cluster.control_plane.state().pids == {}


# --- kube-controller-manager ----------------------------------------------------------------
def _local(kube):  # type: ignore[no-untyped-def]
    if kube.local is None:
        pytest.skip("kube-controller-manager's set-up is the local control plane's")
    return kube.local


def _objects(kube, *args: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return list(json.loads(kube.kubectl("get", *args, "-o", "json").stdout)["items"])


def _poll(what: str, check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def namespace(kube):  # type: ignore[no-untyped-def]
    name = f"kcm-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--timeout=60s", check=False)


def test_controller_manager_runs_as_its_own_user_not_as_an_admin(kube) -> None:  # type: ignore[no-untyped-def]
    config = _local(kube).control_plane.controller_manager_kubeconfig
    kubectl = [*_kubectl(kube), "--kubeconfig", str(config)]
    who = json.loads(subprocess.run([*kubectl, "auth", "whoami", "-o", "json"],
                                    capture_output=True, text=True, check=True).stdout)
    assert who["status"]["userInfo"]["username"] == "system:kube-controller-manager"
    assert "system:masters" not in who["status"]["userInfo"].get("groups", [])
    # the bootstrap role lets it make the controllers' service accounts, not grant rights
    denied = subprocess.run([*kubectl, "create", "clusterrolebinding", "grab",
                             "--clusterrole=cluster-admin", "--user=me"],
                            capture_output=True, text=True)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    # each controller acts with a service account of its own
    accounts = {a["metadata"]["name"] for a in _objects(kube, "sa", "-n", "kube-system")}
    assert {"generic-garbage-collector", "namespace-controller", "node-controller"} <= accounts


def test_a_deleted_namespace_is_gone_with_what_it_held(kube) -> None:  # type: ignore[no-untyped-def]
    name = f"kcm-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("create", "configmap", "settings", "-n", name, "--from-literal=a=b")
    cluster = yaml.safe_load((REPO / "manifests" / "samples" / "inguestcluster.yaml").read_text())
    cluster["metadata"]["namespace"] = name
    kube.kubectl("apply", "-f", "-", input=json.dumps(cluster))
    kube.kubectl("delete", "namespace", name, "--timeout=60s")
    assert kube.kubectl("get", "namespace", name, check=False).returncode != 0


def test_an_owned_object_is_collected_after_its_owner(kube, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """A Secret owned by an InGuestCluster (as the operator's per-cluster CA will be) goes
    when the cluster goes: the garbage collector knows guestha's own kinds."""
    cluster = yaml.safe_load((REPO / "manifests" / "samples" / "inguestcluster.yaml").read_text())
    cluster["metadata"]["namespace"] = namespace
    kube.kubectl("apply", "-f", "-", input=json.dumps(cluster))
    owner = json.loads(kube.kubectl("get", "igc", cluster["metadata"]["name"], "-n", namespace,
                                    "-o", "json").stdout)
    for name in ("background", "foreground"):
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "ownerReferences": [{
                "apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "blockOwnerDeletion": True}]},
            "stringData": {"ca.crt": "not really"},
        }))
    kube.kubectl("delete", "igc", owner["metadata"]["name"], "-n", namespace,
                 "--cascade=foreground", "--timeout=60s")
    _poll("the owned Secrets collected",
          lambda: not {s["metadata"]["name"] for s in _objects(kube, "secret", "-n", namespace)}
          & {"background", "foreground"})


def test_a_service_account_token_secret_is_filled_in(kube, namespace: str) -> None:  # type: ignore[no-untyped-def]
    kube.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "robot-token",
                     "annotations": {"kubernetes.io/service-account.name": "robot"}}}))
    secret = _poll("the token filled in", lambda: (s := json.loads(kube.kubectl(
        "get", "secret", "robot-token", "-n", namespace, "-o", "json").stdout)).get(
        "data", {}).get("token") and s)
    assert {"token", "ca.crt", "namespace"} <= set(secret["data"])


def test_services_get_endpoint_slices(kube, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """A Service with a selector gets an EndpointSlice of its own; one without, whose
    Endpoints are written by hand, gets them mirrored into a slice."""
    kube.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", namespace)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
        "spec": {"ports": [{"port": 5432}]}}))
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "outside"},
        "subsets": [{"addresses": [{"ip": "10.213.0.7"}], "ports": [{"port": 5432}]}]}))

    def slices() -> dict[str, list[dict]]:  # type: ignore[type-arg]
        found: dict[str, list[dict]] = {}  # type: ignore[type-arg]
        for s in _objects(kube, "endpointslices", "-n", namespace):
            service = s["metadata"].get("labels", {}).get("kubernetes.io/service-name", "")
            found.setdefault(service, []).append(s)
        return found if {"web", "outside"} <= set(found) else {}

    found = _poll("EndpointSlices of both Services", slices)
    mirrored = found["outside"][0]
    assert [e["addresses"] for e in mirrored["endpoints"]] == [["10.213.0.7"]]
    assert mirrored["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "endpointslicemirroring-controller.k8s.io"
