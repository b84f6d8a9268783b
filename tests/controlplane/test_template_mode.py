"""Template injection mode with the real apiserver, the simulator and the operator running
with its own RBAC: the operator patches member VMs' templates, reports that a running one
needs a restart (and never restarts it), the agent joins after the owner's restart, and a
VM that leaves the cluster (removed from spec.members, the cluster back in Webhook mode,
the cluster deleted) gets its own template back. The webhook, which serves this namespace
too once the cluster exists, leaves the VMIs of injected templates alone.

One module-scoped story, in order: each test depends on the state the one before left.
"""

from __future__ import annotations

import base64
import copy
import email
import functools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubevirtkit import Namespace, has_condition, wait_for
from test_injection_webhook import guest_file

from guestha.cloudinit.merge import GUESTHA_PART
from guestha.kubevirt.injection import INJECTED_ANNOTATION
from guestha.kubevirt.template import RECORD_ANNOTATION

pytestmark = pytest.mark.controlplane

CLUSTER = "tpl"
USER_CONFIG = ("#cloud-config\nwrite_files:\n- path: /var/lib/user-file\n  content: mine\n"
               "runcmd:\n- echo user >> /var/lib/user-ran\n")


def vm(name: str, run: str, volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "template-test"}},
        "spec": {"runStrategy": run, "template": {
            "metadata": {"labels": {"app": "template-test"}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "domain": {"devices": {"disks": [{"name": v["name"], "disk": {"bus": "virtio"}}
                                                 for v in volumes]},
                           "memory": {"guest": "128Mi"}, "resources": {}},
                "volumes": volumes}}},
    }


RUNNING = vm("tpl-a", "Always", [{"name": "cloudinitdisk",
                                  "cloudInitNoCloud": {"userData": USER_CONFIG}}])
STOPPED = vm("tpl-b", "Halted", [])


def cluster(mode: str, members: list[str]) -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": CLUSTER},
            "spec": {"members": [{"name": m} for m in members], "injection": {"mode": mode},
                     "fencing": {"watchdog": True}}}


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    name = f"template-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    space = Namespace(kube, name, timeout=90, interval=0.25)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--timeout=120s", check=False)


@pytest.fixture(scope="module")
def before(ns: Namespace) -> dict[str, Any]:
    """The two VMs as their owner applied them (tpl-a running, tpl-b stopped), then the
    cluster in Template mode; the first run of tpl-a."""
    for body in (RUNNING, STOPPED):
        ns.apply(body)
    first = ns.running("tpl-a")
    applied = {name: ns.get("vm", name) for name in ("tpl-a", "tpl-b")}
    ns.apply(cluster("Template", ["tpl-a", "tpl-b"]))
    return {"vms": applied, "first": first}


def spec_template(ns: Namespace, name: str) -> dict[str, Any]:
    got = ns.get("vm", name)
    assert got is not None
    return dict(got["spec"]["template"])


def injected(ns: Namespace, name: str) -> dict[str, Any] | None:
    got = ns.get("vm", name)
    if got is None or RECORD_ANNOTATION not in (got["metadata"].get("annotations") or {}):
        return None
    return got


def member_status(ns: Namespace, name: str) -> dict[str, Any]:
    igc = ns.get("igc", CLUSTER) or {}
    return next((m for m in (igc.get("status") or {}).get("members") or ()
                 if m.get("name") == name), {})


def test_member_templates_are_patched(ns: Namespace, before: dict[str, Any]) -> None:
    for name in ("tpl-a", "tpl-b"):
        got = ns.wait_for(f"VM {name}'s template injected", functools.partial(
            injected, ns, name))
        secret = f"{name}-guestha-userdata"
        spec = got["spec"]["template"]["spec"]
        volumes = [v for v in spec["volumes"] if "cloudInitNoCloud" in v]
        assert [v["cloudInitNoCloud"] for v in volumes] == [{"secretRef": {"name": secret}}]
        assert spec["domain"]["devices"]["watchdog"]["i6300esb"] == {"action": "reset"}
        assert got["spec"]["template"]["metadata"]["annotations"][INJECTED_ANNOTATION] == secret
        assert got["spec"]["runStrategy"] == before["vms"][name]["spec"]["runStrategy"]
        stored = ns.get("secret", secret)
        assert stored is not None
        data = base64.b64decode(stored["data"]["userdata"]).decode()
        assert data.count(GUESTHA_PART) == 1
        shown = json.loads(ns.kubectl("get", "vm", name, "-o", "json",
                                      "--show-managed-fields").stdout)
        managers = {f["manager"] for f in shown["metadata"].get("managedFields") or ()}
        assert "guestha" in managers
    # tpl-a's Secret: the owner's user-data first, unchanged, then guestha's part
    data = base64.b64decode((ns.get("secret", "tpl-a-guestha-userdata") or {})
                            ["data"]["userdata"])
    parts = [p for p in email.message_from_bytes(data).walk() if not p.is_multipart()]
    assert [p.get_payload(decode=True) for p in parts[:1]] == [USER_CONFIG.encode()]
    assert parts[-1].get_filename() == GUESTHA_PART and len(parts) == 2


def test_the_running_member_needs_a_restart_and_is_not_restarted(
        ns: Namespace, before: dict[str, Any]) -> None:
    ns.wait_for("KubeVirt's RestartRequired on tpl-a", lambda: has_condition(
        ns.get("vm", "tpl-a") or {}, "RestartRequired"))
    entry = ns.wait_for("tpl-a restartRequired in the cluster status, with KubeVirt's word",
                        lambda: (m if (m := member_status(ns, "tpl-a")).get("restartRequired")
                                 and "KubeVirt" in m.get("message", "") else None))
    assert "restart the VM" in entry["message"]
    assert not member_status(ns, "tpl-b").get("restartRequired")
    assert not has_condition(ns.get("vm", "tpl-b") or {}, "RestartRequired")
    reasons = ns.wait_for("the RestartRequired Event", lambda: (
        r if "RestartRequired" in (r := {e["reason"] for e in ns.events(CLUSTER)}) else None))
    assert "TemplateInjected" in reasons
    running = ns.get("vmi", "tpl-a")
    assert running is not None and running["metadata"]["uid"] == before["first"]["metadata"]["uid"]
    # one patch each, however many passes ran since (every VM and VMI change wakes one)
    for name in ("tpl-a", "tpl-b"):
        assert (ns.get("vm", name) or {})["metadata"]["generation"] == \
            before["vms"][name]["metadata"]["generation"] + 1
    assert INJECTED_ANNOTATION not in (running["metadata"].get("annotations") or {})


def test_after_a_restart_the_agent_joins_and_the_webhook_did_not_inject_again(
        ns: Namespace, before: dict[str, Any], simulator: Any) -> None:
    old = before["first"]["metadata"]["uid"]
    result = ns.put_raw(ns.vm_path("tpl-a", "restart"), {"gracePeriodSeconds": 0})
    assert result.returncode == 0, result.stderr
    vmi = ns.running("tpl-a", other_than=old)
    secret = "tpl-a-guestha-userdata"
    assert vmi["metadata"]["annotations"][INJECTED_ANNOTATION] == secret
    volumes = [v for v in vmi["spec"]["volumes"] if "cloudInitNoCloud" in v]
    assert [v["cloudInitNoCloud"] for v in volumes] == [{"secretRef": {"name": secret}}]
    assert len(vmi["spec"]["domain"]["devices"]["disks"]) == 1
    ns.wait_for("tpl-a's agent Connected in the cluster status", lambda: (
        member_status(ns, "tpl-a").get("agent") == "Connected"), 120)
    ns.wait_for("restartRequired gone", lambda: not member_status(ns, "tpl-a").get(
        "restartRequired"))
    ns.wait_for("KubeVirt's RestartRequired gone", lambda: not has_condition(
        ns.get("vm", "tpl-a") or {}, "RestartRequired"))
    wait_for("the owner's own cloud-init, run once", lambda: guest_file(
        simulator.state_dir, vmi, "/var/lib/user-ran") == "user\n", 60)
    assert guest_file(simulator.state_dir, vmi, "/var/lib/user-file") == "mine"


def test_a_removed_member_gets_its_own_template_back(
        ns: Namespace, before: dict[str, Any]) -> None:
    ns.apply(cluster("Template", ["tpl-a"]))
    ns.wait_for("tpl-b restored", lambda: injected(ns, "tpl-b") is None)
    assert spec_template(ns, "tpl-b") == before["vms"]["tpl-b"]["spec"]["template"]
    assert injected(ns, "tpl-a") is not None


def test_back_to_webhook_mode_restores_and_deletion_restores(
        ns: Namespace, before: dict[str, Any]) -> None:
    ns.apply(cluster("Webhook", ["tpl-a"]))
    ns.wait_for("tpl-a restored", lambda: injected(ns, "tpl-a") is None)
    assert spec_template(ns, "tpl-a") == before["vms"]["tpl-a"]["spec"]["template"]
    annotations = (ns.get("vm", "tpl-a") or {})["metadata"].get("annotations") or {}
    assert RECORD_ANNOTATION not in annotations
    # Template mode again, then the cluster deleted: restored before it goes
    ns.apply(cluster("Template", ["tpl-a", "tpl-b"]))
    for name in ("tpl-a", "tpl-b"):
        ns.wait_for(f"{name} injected again", functools.partial(injected, ns, name))
    ns.kubectl("delete", "igc", CLUSTER, "--timeout=60s")
    for name in ("tpl-a", "tpl-b"):
        assert injected(ns, name) is None
        assert spec_template(ns, name) == copy.deepcopy(
            before["vms"][name]["spec"]["template"])


def test_a_member_that_cannot_be_injected_is_reported_and_left_alone(
        ns: Namespace, before: dict[str, Any]) -> None:
    """A watchdog that is no i6300esb cannot serve fencing.watchdog: the VM is not patched,
    and an Event names the template's field."""
    odd = vm("tpl-c", "Halted", [])
    odd["spec"]["template"]["spec"]["domain"]["devices"]["watchdog"] = {
        "name": "mine", "diag288": {"action": "reset"}}
    ns.apply(odd)
    applied = ns.get("vm", "tpl-c")
    assert applied is not None
    ns.apply(cluster("Template", ["tpl-c"]))
    event = ns.wait_for("the TemplateNotInjected Event", lambda: next(
        (e for e in ns.events(CLUSTER) if e["reason"] == "TemplateNotInjected"), None))
    assert "spec.template.spec.domain.devices.watchdog" in event["message"]
    assert "tpl-c" in event["message"]
    now = ns.get("vm", "tpl-c")
    assert now is not None and now["metadata"]["generation"] == applied["metadata"]["generation"]
    assert injected(ns, "tpl-c") is None
    ns.kubectl("delete", "igc", CLUSTER, "--timeout=60s")
