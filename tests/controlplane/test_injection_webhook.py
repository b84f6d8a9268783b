"""The injection webhook with the real apiserver: it calls the operator's webhook (TLS, the
operator's own CA in the caBundle) for VMIs in namespaces that hold an InGuestCluster.

A member VM boots in the simulator with its own cloud-init still effective (an inline
#cloud-config, or a shell script in a Secret of the user's) and with the agent running and
reachable over the channel, with the credentials the operator keeps in the cluster's CA
Secret (guestha.channel.client.AgentClient). A VM that is no member is left alone; no
VirtualMachine is ever changed; a member that cannot be injected is refused with the reason.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubevirtkit import Namespace, wait_for

from guestha.channel.client import AgentClient
from guestha.channel.transport import ChannelError, Member, NetworkTransport
from guestha.controller.credentials import ClusterCredentials
from guestha.controller.injection import NAMESPACE_LABEL
from guestha.kubevirt.injection import INJECTED_ANNOTATION

pytestmark = pytest.mark.controlplane

CLUSTER = "web"
USER_CONFIG = ("#cloud-config\nwrite_files:\n- path: /var/lib/user-file\n  content: mine\n"
               "runcmd:\n- echo user > /var/lib/user-ran\n")
USER_SCRIPT = "#!/bin/sh\necho script > /var/lib/script-ran\n"


def vm(name: str, volumes: list[dict[str, Any]], run: str = "Always") -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "inject-test"}},
        "spec": {"runStrategy": run, "template": {"spec": {
            "terminationGracePeriodSeconds": 0,
            "domain": {"devices": {"disks": [{"name": v["name"], "disk": {"bus": "virtio"}}
                                             for v in volumes]},
                       "memory": {"guest": "128Mi"}, "resources": {}},
            "volumes": volumes}}},
    }


def nocloud(**source: Any) -> list[dict[str, Any]]:
    return [{"name": "cloudinitdisk", "cloudInitNoCloud": source}]


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    name = f"inject-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    space = Namespace(kube, name, timeout=90, interval=0.25)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--timeout=120s", check=False)


@pytest.fixture(scope="module")
def booted(ns: Namespace, simulator: Any) -> dict[str, dict[str, Any]]:
    """Two members (inline cloud-config; a script in the user's Secret) and a VM that is
    no member, all running; their VMs as applied."""
    ns.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
              "metadata": {"name": CLUSTER},
              "spec": {"members": [{"name": "inj-a"}, {"name": "inj-b"}, {"name": "inj-x"}],
                       "fencing": {"watchdog": True}}})
    wait_for(f"the operator labelling namespace {ns.name}", lambda: (ns.kube.kubectl(
        "get", "namespace", ns.name, "-o", "json").stdout.count(NAMESPACE_LABEL)), 30)
    ns.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users-own"},
              "data": {"userdata": base64.b64encode(USER_SCRIPT.encode()).decode()}})
    vms = {"inj-a": vm("inj-a", nocloud(userData=USER_CONFIG)),
           "inj-b": vm("inj-b", nocloud(secretRef={"name": "users-own"})),
           "other": vm("other", nocloud(userData=USER_CONFIG))}
    for body in vms.values():
        ns.apply(body)
    for name in vms:
        ns.running(name)
    return {name: ns.get("vm", name) or {} for name in vms}


def guest_file(state_dir: Path, vmi: dict[str, Any], path: str) -> str | None:
    """A file the guest wrote (its overlay's upper folder on the host), or None."""
    for record in state_dir.glob("guests/*/guest.json"):
        if json.loads(record.read_text()).get("uid") == vmi["metadata"]["uid"]:
            target = record.parent / "upper" / path.lstrip("/")
            return target.read_text() if target.exists() else None
    return None


def wrote(state_dir: Path, vmi: dict[str, Any], path: str, content: str) -> bool:
    return guest_file(state_dir, vmi, path) == content


def credentials(ns: Namespace) -> ClusterCredentials:
    secret = ns.get("secret", f"{CLUSTER}-guestha-ca")
    assert secret is not None
    return ClusterCredentials.from_secret(secret, ns.name, CLUSTER)


def test_a_members_own_cloud_init_runs_and_its_agent_answers_over_the_channel(
        ns: Namespace, booted: dict[str, dict[str, Any]], simulator: Any) -> None:
    context = credentials(ns).ssl_context()
    for name, own_file, content in (("inj-a", "/var/lib/user-ran", "user\n"),
                                    ("inj-b", "/var/lib/script-ran", "script\n")):
        vmi = ns.running(name)
        assert vmi["metadata"]["annotations"][INJECTED_ANNOTATION] == f"{name}-guestha-userdata"
        assert vmi["spec"]["volumes"][0]["cloudInitNoCloud"] == {
            "secretRef": {"name": f"{name}-guestha-userdata"}}
        assert vmi["spec"]["domain"]["devices"]["watchdog"]["i6300esb"] == {"action": "reset"}
        wait_for(f"{name}'s own cloud-init writing {own_file}",
                 functools.partial(wrote, simulator.state_dir, vmi, own_file, content), 60)
        if name == "inj-a":
            assert guest_file(simulator.state_dir, vmi, "/var/lib/user-file") == "mine"
        member = Member.from_vmi(vmi)

        def status(member: Member = member) -> Any:
            try:
                with AgentClient(member, NetworkTransport(context), timeout=3.0) as c:
                    return c.status()
            except ChannelError:
                return None

        report = wait_for(f"the agent of {name} answering", status, 90)
        assert (report.member, report.cluster) == (name, CLUSTER)


def test_the_member_secret_is_owned_by_the_cluster(
        ns: Namespace, booted: dict[str, dict[str, Any]]) -> None:
    cluster = ns.get("igc", CLUSTER)
    assert cluster is not None
    for secret_name in ("inj-a-guestha-userdata", f"{CLUSTER}-guestha-ca"):
        secret = ns.get("secret", secret_name)
        assert secret is not None
        [owner] = secret["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["blockOwnerDeletion"]) == (
            "InGuestCluster", cluster["metadata"]["uid"], True)


def test_a_vm_that_is_no_member_is_untouched(
        ns: Namespace, booted: dict[str, dict[str, Any]], simulator: Any) -> None:
    vmi = ns.running("other")
    assert INJECTED_ANNOTATION not in (vmi["metadata"].get("annotations") or {})
    assert vmi["spec"]["volumes"] == booted["other"]["spec"]["template"]["spec"]["volumes"]
    assert "watchdog" not in vmi["spec"]["domain"]["devices"]
    assert ns.get("secret", "other-guestha-userdata") is None
    wait_for("the non-member's own cloud-init",
             lambda: guest_file(simulator.state_dir, vmi, "/var/lib/user-ran") == "user\n", 60)


def test_no_virtual_machine_is_changed(ns: Namespace,
                                       booted: dict[str, dict[str, Any]]) -> None:
    for name, before in booted.items():
        now = ns.get("vm", name)
        assert now is not None
        assert now["metadata"]["generation"] == before["metadata"]["generation"] == 1
        assert now["spec"] == before["spec"]


def test_a_member_that_cannot_be_injected_is_refused_with_the_reason(
        ns: Namespace, booted: dict[str, dict[str, Any]]) -> None:
    """inj-x names a Secret that does not exist: its VMI is refused, naming the field and
    the Secret, and never created (the VM controller would retry)."""
    ns.apply(vm("inj-x", nocloud(secretRef={"name": "not-there"}), run="Halted"))
    owner = ns.get("vm", "inj-x")
    assert owner is not None
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
           "metadata": {"name": "inj-x", "ownerReferences": [{
               "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "inj-x",
               "uid": owner["metadata"]["uid"], "controller": True}]},
           "spec": owner["spec"]["template"]["spec"]}
    result = ns.kubectl("create", "-f", "-", input=json.dumps(vmi), check=False)
    assert result.returncode != 0
    assert "inject.guestha.io" in result.stderr
    assert "spec.volumes[0].cloudInitNoCloud.secretRef" in result.stderr
    assert "'not-there' not found" in result.stderr
    assert ns.get("vmi", "inj-x") is None
