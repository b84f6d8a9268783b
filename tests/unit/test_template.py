"""Template mode, pure (guestha.kubevirt.template): a member VM's template gets the webhook's
injection, recorded on the VM, and loses exactly that again.

Patches are applied with an independent RFC 6902 implementation (jsonpatch). The round
trip (inject, then undo) must give back the VM the user wrote, for every user-data form
and cloud-init source the webhook's tests cover and for every vendored KubeVirt example;
what the user changed in between is kept; a VMI that KubeVirt makes of the injected
template is one the webhook leaves alone.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from guestha.controller import cluster_status
from guestha.controller import template as controller_template
from guestha.kubevirt import injection, members, template
from kubevirtsim import vm as simvm
from testbed.devcluster import kubevirt_examples

pytestmark = pytest.mark.unit

SECRET = "web-a-guestha-userdata"
PLAN = injection.Plan(SECRET, watchdog=True, vsock=False)
CONTAINER = {"name": "containerdisk", "containerDisk": {"image": "example/disk"}}
SCRIPT = "#!/bin/sh\necho 'printed from cloud-init userdata'\n"
CLOUD_CONFIG = "#cloud-config\nruncmd: [echo user]\n"
MIME = ('Content-Type: multipart/mixed; boundary="b"\nMIME-Version: 1.0\n\n--b\n'
        'Content-Type: text/cloud-config\n\n#cloud-config\nruncmd: [echo a]\n--b--\n')
NETWORK = "version: 2\nethernets: {eth0: {dhcp4: true}}\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SOURCES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "#cloud-config": {"userData": CLOUD_CONFIG},
    "shell script": {"userData": SCRIPT},
    "MIME multipart": {"userData": MIME},
    "userDataBase64": {"userDataBase64": b64(SCRIPT)},
    "secretRef": {"secretRef": {"name": "users-own"}},
    "networkData": {"userData": CLOUD_CONFIG, "networkData": NETWORK},
    "networkDataBase64": {"userDataBase64": b64(SCRIPT), "networkDataBase64": b64(NETWORK)},
    "networkDataSecretRef": {"secretRef": {"name": "users-own"},
                             "networkDataSecretRef": {"name": "net"}},
}


def vm(source: dict[str, Any] | None, datasource: str = "cloudInitNoCloud",
       devices: dict[str, Any] | None = None, template_meta: dict[str, Any] | None = None,
       annotations: dict[str, str] | None = None) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [CONTAINER]
    disks: list[dict[str, Any]] = [{"name": "containerdisk", "disk": {"bus": "virtio"}}]
    if source is not None:
        volumes.append({"name": "cloudinitdisk", datasource: source})
        disks.append({"name": "cloudinitdisk", "disk": {"bus": "virtio"}})
    meta: dict[str, Any] = {"name": "web-a", "namespace": "apps", "uid": "vm-uid",
                            "resourceVersion": "7"}
    if annotations is not None:
        meta["annotations"] = annotations
    body: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": meta,
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {"devices": {"disks": disks} if devices is None else devices,
                       "resources": {"requests": {"memory": "64M"}}},
            "volumes": volumes}}}}
    if template_meta is not None:
        body["spec"]["template"]["metadata"] = template_meta
    return body


def injected(body: dict[str, Any], plan: injection.Plan = PLAN,
             inputs: str = "i1") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = template.inject(body, plan, "web", inputs)
    ops = template.json_patch(body, result.template, result.record)
    after: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(body), ops)
    return after, ops


def undone(body: dict[str, Any], cluster: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(body),
                                                   template.undo_patch(body, cluster))
    return result


@pytest.mark.parametrize("datasource", injection.DATASOURCES)
@pytest.mark.parametrize("form", SOURCES, ids=list(SOURCES))
def test_inject_then_undo_gives_back_the_users_vm(form: str, datasource: str) -> None:
    original = vm(copy.deepcopy(SOURCES[form]), datasource)
    after, ops = injected(original)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    spec = after["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if "cloudinit" in v["name"])
    source = volume.get(datasource) or volume["cloudInitNoCloud"]
    assert source["secretRef"] == {"name": SECRET}
    kept = {k: v for k, v in (SOURCES[form] or {}).items() if k.startswith("network")}
    assert {k: v for k, v in source.items() if k != "secretRef"} == kept
    assert spec["domain"]["devices"]["watchdog"] == injection.WATCHDOG_DEVICE
    assert after["spec"]["template"]["metadata"]["annotations"] == {
        injection.INJECTED_ANNOTATION: SECRET}
    record = template.record_of(after)
    assert record is not None and record.cluster == "web"
    assert record.source == (None if SOURCES[form] is None else {
        k: v for k, v in SOURCES[form].items() if k in injection.USER_SOURCES})
    assert template.template_injected(after, SECRET)
    # idempotent: a second reconcile changes nothing
    again = template.inject(after, PLAN, "web", "i1")
    assert template.json_patch(after, again.template, again.record) == []
    # undo: the user's VM, as it was
    assert undone(after) == original
    assert template.undo_patch(original) == []


@pytest.mark.parametrize("devices", [{}, None, {"disks": [{"name": "containerdisk"}]}],
                         ids=["no devices", "no domain.devices", "own disks"])
def test_containers_guestha_creates_go_again(devices: dict[str, Any] | None) -> None:
    original = vm(None, devices={} if devices is None else devices)
    if devices is None:
        del original["spec"]["template"]["spec"]["domain"]["devices"]
    del original["spec"]["template"]["spec"]["volumes"]
    original["metadata"].pop("annotations", None)
    after, _ = injected(original, injection.Plan(SECRET, watchdog=True, vsock=True))
    devs = after["spec"]["template"]["spec"]["domain"]["devices"]
    assert devs["autoattachVSOCK"] is True and "guestha-cloudinit" in json.dumps(devs["disks"])
    assert undone(after) == original


def test_the_vms_own_annotations_and_template_metadata_are_kept() -> None:
    original = vm(SOURCES["#cloud-config"], template_meta={"labels": {"kubevirt.io/vm": "a"},
                                                          "annotations": {"mine": "1"}},
                  annotations={"argocd.argoproj.io/tracking-id": "x"})
    after, _ = injected(original)
    assert after["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] == "x"
    assert after["spec"]["template"]["metadata"]["annotations"] == {
        "mine": "1", injection.INJECTED_ANNOTATION: SECRET}
    assert undone(after) == original


def test_what_the_user_changed_since_is_kept_by_the_undo() -> None:
    original = vm(SOURCES["#cloud-config"])
    after, _ = injected(original)
    changed = copy.deepcopy(after)
    spec = changed["spec"]["template"]["spec"]
    spec["volumes"][1]["cloudInitNoCloud"] = {"userData": "#cloud-config\nruncmd: [echo new]\n"}
    spec["domain"]["devices"]["watchdog"] = {"name": "mine", "i6300esb": {"action": "poweroff"}}
    spec["domain"]["resources"]["requests"]["memory"] = "128M"
    back = undone(changed)["spec"]["template"]["spec"]
    assert back["volumes"][1]["cloudInitNoCloud"] == {
        "userData": "#cloud-config\nruncmd: [echo new]\n"}
    assert back["domain"]["devices"]["watchdog"]["name"] == "mine"
    assert back["domain"]["resources"]["requests"]["memory"] == "128M"
    # and a reinjection starts from the user's new cloud-init
    result = template.inject(changed, PLAN, "web", "i1")
    assert result.record.source == {"userData": "#cloud-config\nruncmd: [echo new]\n"}


def test_a_reverted_template_is_injected_again_from_the_users_version() -> None:
    original = vm(SOURCES["shell script"])
    after, _ = injected(original)
    reverted = copy.deepcopy(after)
    reverted["spec"]["template"] = copy.deepcopy(original["spec"]["template"])  # GitOps sync
    assert not template.template_injected(reverted, SECRET)
    again, ops = injected(reverted)
    assert ops and again["spec"]["template"] == after["spec"]["template"]
    assert template.record_of(again) == template.record_of(after)


def test_a_new_plan_reinjects_and_the_undo_still_gives_back_the_original() -> None:
    original = vm(SOURCES["userDataBase64"])
    after, _ = injected(original, injection.Plan(SECRET, watchdog=True, vsock=False))
    switched, ops = injected(after, injection.Plan(SECRET, watchdog=False, vsock=True), "i2")
    devices = switched["spec"]["template"]["spec"]["domain"]["devices"]
    assert ops and "watchdog" not in devices and devices["autoattachVSOCK"] is True
    assert template.record_of(switched).inputs == "i2"  # type: ignore[union-attr]
    assert undone(switched) == original


def test_undo_is_for_the_cluster_that_injected() -> None:
    after, _ = injected(vm(SOURCES["#cloud-config"]))
    assert template.undo_patch(after, "other") == []
    assert template.undo_patch(after, "web") != []


def test_what_cannot_be_injected_is_refused_naming_the_template_field() -> None:
    body = vm(SOURCES["#cloud-config"], devices={"watchdog": {"name": "w", "diag288": {}}})
    with pytest.raises(injection.InjectionError, match=r"spec\.template\.spec\.domain\."
                                                       r"devices\.watchdog"):
        template.inject(body, PLAN, "web", "i1")
    hand_made = injected(vm(SOURCES["#cloud-config"]))[0]
    del hand_made["metadata"]["annotations"][template.RECORD_ANNOTATION]
    with pytest.raises(injection.InjectionError, match="record"):
        template.inject(hand_made, PLAN, "web", "i1")
    broken = vm(None, annotations={template.RECORD_ANNOTATION: "{not json"})
    with pytest.raises(ValueError, match=r"guestha\.io/template-injection"):
        template.record_of(broken)


def test_the_webhook_leaves_a_vmi_of_an_injected_template_alone() -> None:
    """KubeVirt makes the VMI from the template, annotations included: the webhook's patch
    for it is empty (no second injection)."""
    after, _ = injected(vm(SOURCES["#cloud-config"]))
    after["metadata"]["generation"] = 2
    vmi = simvm.vmi_from_vm(after)
    assert injection.json_patch(vmi, PLAN) == []
    # also for a cluster that asks otherwise now (switched to Webhook mode, another plan):
    # the template is restored by the reconcile, and the next instance injected by the webhook
    assert injection.json_patch(vmi, injection.Plan(SECRET, watchdog=False, vsock=True)) == []
    # while the VMI of the user's own template is injected
    assert injection.json_patch(simvm.vmi_from_vm({**vm(SOURCES["#cloud-config"]),
                                                   "metadata": after["metadata"]}), PLAN) != []


def example_vms() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in kubevirt_examples():
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "VirtualMachine":
                out.append((Path(path).name, doc))
    return out


@pytest.mark.parametrize(("name", "example"), example_vms(), ids=lambda v: str(v)[:40])
def test_every_kubevirt_example_vm_round_trips(name: str, example: dict[str, Any]) -> None:
    try:
        after, _ = injected(example, injection.Plan(SECRET, watchdog=True, vsock=True))
    except injection.InjectionError as e:  # refused as the webhook refuses it: say why
        pytest.skip(f"{name}: {e}")
    assert template.template_injected(after, SECRET)
    assert undone(after) == example


# -- what the operator reports (guestha.kubevirt.members, guestha.controller.template)

def vmi_of(body: dict[str, Any], phase: str = "Running",
           deleting: bool = False) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["generation"] = 1
    made = simvm.vmi_from_vm(body)
    made["metadata"]["uid"] = "vmi-uid"
    if deleting:
        made["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    made["status"] = {"phase": phase}
    return made


KUBEVIRT_SAYS = {"type": "RestartRequired", "status": "True",
                 "message": "a non-live-updatable field was changed in the template spec"}


def with_condition(body: dict[str, Any], *conditions: dict[str, Any]) -> dict[str, Any]:
    return {**body, "status": {"conditions": list(conditions)}}


def test_restart_required_rule() -> None:
    """A table: (VM, VMI) -> restart required, and KubeVirt's word in the message."""
    original = vm(SOURCES["#cloud-config"])
    after, _ = injected(original)
    reverted = copy.deepcopy(after)
    reverted["spec"]["template"] = copy.deepcopy(original["spec"]["template"])
    old_run = vmi_of(original)
    new_run = vmi_of(after)
    cases = [
        # (vm, vmi, required?, KubeVirt's message in it?)
        (original, old_run, False, False),  # never injected
        (after, None, False, False),  # stopped: the next start runs the template
        (after, old_run, True, False),  # injected after the instance started
        (with_condition(after, KUBEVIRT_SAYS), old_run, True, True),
        (after, vmi_of(original, "Succeeded"), False, False),  # final: nothing runs
        (after, vmi_of(original, deleting=True), False, False),  # on its way out
        (after, new_run, False, False),  # started from the injected template
        (with_condition(after, KUBEVIRT_SAYS), new_run, True, True),  # injected again
        (with_condition(after, {**KUBEVIRT_SAYS, "status": "False"}), new_run, False, False),
        (reverted, old_run, False, False),  # the user took it out: not guestha's to say
    ]
    for body, vmi, required, kubevirt in cases:
        for form in (body, members.vm_entry(body)):  # a whole VM, and the index's entry
            entry = None if vmi is None else members.vmi_entry(vmi)
            for shape in (vmi, entry):
                why = members.restart_required(form, shape)
                assert (why is not None) is required, (body["metadata"], vmi, why)
                assert (why is not None and "KubeVirt" in why) is kubevirt


def test_the_cluster_status_reports_restart_required_per_member() -> None:
    after, _ = injected(vm(SOURCES["#cloud-config"]))
    view = members.observe("web-a", members.vm_entry(after),
                           members.vmi_entry(vmi_of(vm(SOURCES["#cloud-config"]))))
    assert view.restart_required is not None
    status = cluster_status.build([view], {}, 1, "2026-01-01T00:00:00Z")
    [entry] = status["members"]
    assert entry["restartRequired"] is True and "restart the VM" in entry["message"]
    fresh = members.observe("web-a", members.vm_entry(after), members.vmi_entry(vmi_of(after)))
    [entry] = cluster_status.build([fresh], status, 1, "2026-01-01T00:00:00Z")["members"]
    assert "restartRequired" not in entry and "message" not in entry


def test_the_index_tells_which_vms_need_a_pass() -> None:
    """controller.template.needs_work over the index entries: a settled cluster needs no
    API call; a member not injected (or for another plan), and a VM the cluster injected
    that is no member any more, do."""
    original = vm(SOURCES["#cloud-config"])
    after, _ = injected(original, inputs="k1")
    reverted = copy.deepcopy(after)
    reverted["spec"]["template"] = copy.deepcopy(original["spec"]["template"])
    other = injected(original, inputs="k1")[0]
    other["metadata"]["annotations"][template.RECORD_ANNOTATION] = json.dumps(
        {**json.loads(other["metadata"]["annotations"][template.RECORD_ANNOTATION]),
         "cluster": "other"})
    cases = [
        # (vm, member?, key, needs work?)
        (original, True, "k1", True),
        (after, True, "k1", False),
        (after, True, "k2", True),  # the plan or the agent changed
        (reverted, True, "k1", True),  # the user's template came back
        (other, True, "k1", True),  # another cluster's: refused in the pass, reported
        (original, False, None, False),
        (after, False, None, True),  # left the cluster (or Webhook mode): restore
        (other, False, None, False),  # another cluster's business
    ]
    for body, member, key, expected in cases:
        assert controller_template.needs_work(members.vm_entry(body), "web", member,
                                              key) is expected, (member, key)
