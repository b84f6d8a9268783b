"""The injection, pure: the guest's user-data merged with guestha's part
(guestha.cloudinit.merge), the VMI patch (guestha.kubevirt.injection) and the member's whole
user-data (guestha.controller.userdata), read back by the KubeVirt simulator's cloud-init
(kubevirtsim.cloudinit: MIME, gzip, merge_how as cloud-init applies them, and
kubevirtsim.userdata: the cloud-init volume as virt-launcher reads it).

"Unchanged in meaning" is checked as cloud-init sees it: what the guest's user-data makes
alone (its merged cloud-config, its scripts, boothooks, notes and errors) is what the merged
document makes, but for guestha's write_files and runcmd entries appended after the
guest's own. Every form of user-data, every cloud-init source of a VMI, and every vendored
KubeVirt example made a member go through that check; refusals name the field.
"""

from __future__ import annotations

import base64
import copy
import gzip
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from guestha.cloudinit import merge, recipe
from guestha.controller import userdata
from guestha.controller.credentials import ClusterCredentials
from guestha.kubevirt import injection
from guestha.model.injection import InjectionSpec
from guestha.protocol import keys
from kubevirtsim import userdata as simuserdata
from kubevirtsim.cloudinit.consume import UserData, parse_user_data
from kubevirtsim.cloudinit.planner import build_plan
from testbed.devcluster import kubevirt_examples

pytestmark = pytest.mark.unit

GUESTHA = {"write_files": [{"path": "/etc/guestha/x", "content": "guestha"}],
           "runcmd": ["systemctl enable --now guestha-agent"]}
PLAN = injection.Plan("web-a-guestha-userdata", watchdog=True, vsock=False)


def mime(*parts: tuple[str, str, str | None, dict[str, str]]) -> bytes:
    """A MIME multipart user-data: (subtype, text, filename, extra headers) per part."""
    document = MIMEMultipart()
    for subtype, text, filename, headers in parts:
        part = MIMEText(text, subtype)
        if filename:
            part.add_header("Content-Disposition", "attachment", filename=filename)
        for key, value in headers.items():
            part[key] = value
        document.attach(part)
    return document.as_bytes()


CLOUD_CONFIG = (b"#cloud-config\npassword: fedora\nchpasswd: {expire: False}\n"
                b"write_files:\n- path: /etc/user\n  content: mine\n"
                b"runcmd:\n- echo user > /var/lib/user-ran\n- [touch, /var/lib/user-list]\n"
                b"bootcmd:\n- echo early\n")
SCRIPT = b"#!/bin/sh\necho 'printed from cloud-init userdata'\n"
FORMS: dict[str, bytes | None] = {
    "none": None,
    "empty": b"",
    "cloud-config": CLOUD_CONFIG,
    "shell script": SCRIPT,
    "boothook": b"#cloud-boothook\n#!/bin/sh\necho hook\n",
    "include": b"#include\nhttp://192.0.2.1/user-data\n",
    "jinja": b"## template: jinja\n#cloud-config\nruncmd: ['echo {{ v1.instance_id }}']\n",
    "cloud-config with its own merge_how": CLOUD_CONFIG
        + b"merge_how: 'dict(recurse_array,no_replace)+list(prepend)'\n",
    "cloud-config, runcmd only": b"#cloud-config\nruncmd: [echo only]\n",
    "MIME multipart": mime(
        ("cloud-config", "#cloud-config\nwrite_files: [{path: /etc/a, content: a}]\n"
         "runcmd: [echo a]\n", None, {}),
        ("x-shellscript", "#!/bin/sh\necho part script\n", "zz-late.sh", {}),
        ("cloud-config", "#cloud-config\nruncmd: [echo b]\n", "b.cfg",
         {"Merge-Type": "list(append)+dict(recurse_array)"}),
        ("x-shellscript-per-boot", "#!/bin/sh\necho every boot\n", "each.sh", {}),
    ),
    "MIME, one part guessed from text/plain": mime(("plain", SCRIPT.decode(), None, {})),
    "gzip cloud-config": gzip.compress(CLOUD_CONFIG),
    "gzip MIME": gzip.compress(mime(("cloud-config", "#cloud-config\nruncmd: [echo z]\n",
                                     None, {}))),
}


def guestha_entries(config: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: list(config.get(k) or []) for k in ("write_files", "runcmd")}


def assert_same_meaning(alone: UserData, merged: UserData, config: dict[str, Any]) -> None:
    """The guest's user-data means the same inside the merged document; guestha's part
    adds its write_files and runcmd after the guest's."""
    added = guestha_entries(config)
    for key in ("write_files", "runcmd"):
        assert merged.config.get(key) == list(alone.config.get(key) or []) + added[key], key
    rest = {k: v for k, v in merged.config.items() if k not in ("write_files", "runcmd")}
    assert rest == {k: v for k, v in alone.config.items() if k not in ("write_files", "runcmd")}
    assert merged.scripts == alone.scripts
    assert merged.per_frequency == alone.per_frequency
    assert merged.boothooks == alone.boothooks
    assert (merged.notes, merged.errors) == (alone.notes, alone.errors)


@pytest.mark.parametrize("form", FORMS, ids=list(FORMS))
def test_every_form_keeps_its_meaning_and_gets_guesthas_part(form: str) -> None:
    user = FORMS[form]
    merged = merge.merge(user, GUESTHA)
    assert merged.startswith(b"Content-Type: multipart/mixed")
    assert_same_meaning(parse_user_data(user), parse_user_data(merged), GUESTHA)


def test_the_same_input_gives_the_same_bytes() -> None:
    assert merge.merge(CLOUD_CONFIG, GUESTHA) == merge.merge(CLOUD_CONFIG, GUESTHA)
    assert merge.merge(CLOUD_CONFIG, GUESTHA) != merge.merge(SCRIPT, GUESTHA)


def test_a_script_part_keeps_its_place_beside_runcmd() -> None:
    """The guest's lone script is part-001 in scripts-user, run before runcmd (file names
    in run-parts order), with and without guestha's part."""
    def scripts_user(data: bytes | None) -> tuple[str, ...]:
        plan = build_plan("iid", "web-a", "NoCloud", data)
        [module] = [m for m in plan.stages["modules-final"] if m.name == "scripts-user"]
        return module.steps[0].paths  # type: ignore[attr-defined,no-any-return]

    assert scripts_user(SCRIPT)[0].endswith("/part-001")
    merged = scripts_user(merge.merge(SCRIPT, GUESTHA))
    assert [p.rsplit("/", 1)[1] for p in merged] == ["part-001", "runcmd"]


def test_broken_user_data_is_refused_with_its_source_named() -> None:
    with pytest.raises(merge.UserDataError, match=r"spec\.volumes\[1\]\.cloudInitNoCloud: gzip"):
        merge.merge(b"\x1f\x8b not really gzip", GUESTHA, "spec.volumes[1].cloudInitNoCloud")
    bomb = gzip.compress(b"#!/bin/sh\n" + b" " * (merge.MAX_GUNZIP + 1))
    with pytest.raises(merge.UserDataError, match="more than"):
        merge.merge(bomb, GUESTHA)
    with pytest.raises(merge.UserDataError, match="merge_how"):
        merge.merge(None, {**GUESTHA, "merge_how": "list(replace)"})


# --------------------------------------------------------------------------- the patch


def vmi(volumes: list[dict[str, Any]] | None, devices: dict[str, Any] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"domain": {"devices": devices if devices is not None else {
        "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]}}}
    if volumes is not None:
        spec["volumes"] = volumes
    meta: dict[str, Any] = {"name": "web-a", "namespace": "apps"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": meta, "spec": spec}


def patched(body: dict[str, Any], plan: injection.Plan = PLAN) -> dict[str, Any]:
    """The VMI after the patch, applied by an independent RFC 6902 implementation; the
    module's own apply() must agree with it."""
    ops = injection.json_patch(body, plan)
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(body), ops)
    assert injection.apply(body, ops) == result
    return result


CONTAINER = {"name": "containerdisk", "containerDisk": {"image": "example/disk"}}


def test_an_inline_source_becomes_the_secret_and_network_data_stays() -> None:
    network = "version: 2\nethernets: {eth0: {dhcp4: true}}\n"
    body = vmi([CONTAINER, {"name": "cloudinitdisk", "cloudInitNoCloud": {
        "userData": "#cloud-config\n", "networkData": network}}])
    after = patched(body)
    assert after["spec"]["volumes"] == [CONTAINER, {"name": "cloudinitdisk", "cloudInitNoCloud": {
        "secretRef": {"name": PLAN.secret}, "networkData": network}}]
    assert after["spec"]["domain"]["devices"]["disks"] == body["spec"]["domain"]["devices"]["disks"]
    assert after["metadata"]["annotations"] == {injection.INJECTED_ANNOTATION: PLAN.secret}
    assert injection.json_patch(after, PLAN) == []  # a second call changes nothing


@pytest.mark.parametrize("datasource", injection.DATASOURCES)
@pytest.mark.parametrize("source", [
    {"userDataBase64": base64.b64encode(SCRIPT).decode()},
    {"secretRef": {"name": "users-own"}},
    {"userData": SCRIPT.decode(), "networkDataSecretRef": {"name": "net"}},
    {"userDataBase64": base64.b64encode(SCRIPT).decode(),
     "networkDataBase64": base64.b64encode(b"version: 2\n").decode()},
], ids=["userDataBase64", "secretRef", "networkDataSecretRef", "networkDataBase64"])
def test_every_source_is_replaced_in_place(datasource: str, source: dict[str, Any]) -> None:
    body = vmi([{"name": "ci", datasource: source}, CONTAINER], annotations={"a": "b"})
    after = patched(body)
    volume = after["spec"]["volumes"][0]
    assert volume["name"] == "ci" and list(volume) == ["name", datasource]
    kept = {k: v for k, v in source.items() if k.startswith("network")}
    assert volume[datasource] == {**kept, "secretRef": {"name": PLAN.secret}}
    assert after["metadata"]["annotations"] == {"a": "b",
                                                injection.INJECTED_ANNOTATION: PLAN.secret}


def test_a_vmi_without_cloud_init_gets_a_nocloud_disk_and_volume() -> None:
    after = patched(vmi([CONTAINER, {"name": "guestha-cloudinit", "emptyDisk": {}}]))
    assert after["spec"]["volumes"][-1] == {"name": "guestha-cloudinit-2", "cloudInitNoCloud": {
        "secretRef": {"name": PLAN.secret}}}
    assert after["spec"]["domain"]["devices"]["disks"][-1] == {
        "name": "guestha-cloudinit-2", "disk": {"bus": "virtio"}}
    bare = patched(vmi(None, devices={}))
    assert [v["name"] for v in bare["spec"]["volumes"]] == ["guestha-cloudinit"]
    assert [d["name"] for d in bare["spec"]["domain"]["devices"]["disks"]] == ["guestha-cloudinit"]


def test_watchdog_and_vsock_are_added_as_the_cluster_asks() -> None:
    plain = patched(vmi([CONTAINER]), injection.Plan("s", watchdog=False, vsock=False))
    devices = plain["spec"]["domain"]["devices"]
    assert "watchdog" not in devices and "autoattachVSOCK" not in devices
    both = patched(vmi([CONTAINER]), injection.Plan("s", watchdog=True, vsock=True))
    devices = both["spec"]["domain"]["devices"]
    assert devices["watchdog"] == {"name": "guestha-watchdog", "i6300esb": {"action": "reset"}}
    assert devices["autoattachVSOCK"] is True
    for action in ("reset", "poweroff", None):
        own = {"name": "mine", "i6300esb": {} if action is None else {"action": action}}
        kept = patched(vmi([CONTAINER], devices={"watchdog": own, "autoattachVSOCK": True}),
                       injection.Plan("s", watchdog=True, vsock=True))
        assert kept["spec"]["domain"]["devices"]["watchdog"] == own


@pytest.mark.parametrize(("body", "plan", "field", "why"), [
    (vmi([CONTAINER], devices={"watchdog": {"name": "w", "i6300esb": {"action": "shutdown"}}}),
     PLAN, "spec.domain.devices.watchdog.i6300esb.action", "'shutdown'"),
    (vmi([CONTAINER], devices={"watchdog": {"name": "w", "diag288": {}}}),
     PLAN, "spec.domain.devices.watchdog", "diag288"),
    (vmi([CONTAINER], devices={"autoattachVSOCK": False}),
     injection.Plan("s", watchdog=False, vsock=True), "spec.domain.devices.autoattachVSOCK",
     "VSOCK"),
    (vmi([{"name": "ci", "cloudInitNoCloud": {"userData": "x", "secretRef": {"name": "s"}}}]),
     PLAN, "spec.volumes[0].cloudInitNoCloud", "exactly one"),
    (vmi([{"name": "ci", "cloudInitConfigDrive": {"userDataBase64": "%%%"}}]),
     PLAN, "spec.volumes[0].cloudInitConfigDrive.userDataBase64", "base64"),
    (vmi([{"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": PLAN.secret}}}]),
     PLAN, "spec.volumes[0].cloudInitNoCloud.secretRef", "guestha's own Secret"),
    (vmi([{"name": "ci", "cloudInitNoCloud": {"secretRef": {}}}]),
     PLAN, "spec.volumes[0].cloudInitNoCloud.secretRef", "must name a Secret"),
], ids=["shutdown watchdog", "other watchdog", "vsock off", "two sources", "bad base64",
        "own secret", "nameless secretRef"])
def test_what_cannot_be_injected_is_refused_naming_the_field(
        body: dict[str, Any], plan: injection.Plan, field: str, why: str) -> None:
    with pytest.raises(injection.InjectionError) as refused:
        injection.json_patch(body, plan)
    assert refused.value.field == field and why in str(refused.value)


def test_a_users_secret_is_read_as_virt_launcher_reads_it() -> None:
    found = injection.cloud_init(vmi([{"name": "ci", "cloudInitNoCloud": {
        "secretRef": {"name": "own"}}}]))
    assert found is not None and found.secret == "own"
    encoded = base64.b64encode(SCRIPT).decode()
    assert injection.secret_user_data(found, {"data": {"userData": encoded}}) == SCRIPT
    assert injection.secret_user_data(found, {"data": {"userdata": encoded,
                                                       "userData": "eA=="}}) == SCRIPT
    with pytest.raises(injection.InjectionError, match="Secret 'own' not found"):
        injection.secret_user_data(found, None)
    with pytest.raises(injection.InjectionError, match="has no key userdata or userData"):
        injection.secret_user_data(found, {"data": {"other": encoded}})


# ------------------------------------------- the member's user-data, booted by the simulator

CREDENTIALS = ClusterCredentials.new("apps", "web")
AGENT = b"PK\x03\x04 a stand-in for the agent zipapp" * 50


def member_secret(user_data: bytes | None, spec: InjectionSpec) -> dict[str, Any]:
    data = userdata.member_user_data(spec, "web", "web-a", CREDENTIALS,
                                     CREDENTIALS.issue_member("web-a"), user_data, AGENT)
    cluster = {"metadata": {"name": "web", "uid": "u-1"}}
    return userdata.build_secret("apps", "web-a", cluster, data)


def boot(spec: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> tuple[Any, UserData]:
    """What the simulator's virt-launcher and cloud-init make of a VMI spec (the boot's
    plan must build: every module's keys decode)."""
    found = simuserdata.cloud_init(spec, secrets.get)
    assert found is not None
    plan = build_plan("iid", "web-a", found.datasource, found.user_data, found.network_data)
    assert plan.stages["modules-final"]
    return found, parse_user_data(found.user_data)


def example_vmis() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in kubevirt_examples():
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "VirtualMachine":
                out.append((path.name, {"metadata": {"name": "web-a"},
                                        "spec": doc["spec"]["template"]["spec"]}))
            elif doc and doc.get("kind") == "VirtualMachineInstance":
                out.append((path.name, {"metadata": {"name": "web-a"}, "spec": doc["spec"]}))
    return out


@pytest.mark.parametrize(("name", "example"), example_vmis(), ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("transport", ["Network", "VSOCK"])
def test_every_kubevirt_example_made_a_member_boots_its_own_and_guesthas_cloud_init(
        name: str, example: dict[str, Any], transport: str) -> None:
    spec = InjectionSpec.from_spec({"channel": {"transport": transport},
                                    "fencing": {"watchdog": True}})
    found = injection.cloud_init(example)
    original = simuserdata.cloud_init(example["spec"], {}.get)
    user = None if found is None else found.inline
    secret = member_secret(user, spec)
    plan = injection.Plan(secret["metadata"]["name"], spec.watchdog, transport == "VSOCK")
    after = patched(example, plan)
    booted, merged = boot(after["spec"], {secret["metadata"]["name"]: secret})
    alone = parse_user_data(None if original is None else original.user_data)
    guestha_config = recipe.cloud_config(
        recipe.identity("web", "web-a", transport=transport, watchdog_device="/dev/watchdog"),
        AGENT, recipe.AgentSecrets(b"x", b"x", b"x", b"x"))
    assert len(merged.config["write_files"]) == len(alone.config.get("write_files") or []) + len(
        guestha_config["write_files"])
    assert merged.config["runcmd"] == list(alone.config.get("runcmd") or []) + guestha_config[
        "runcmd"]
    assert merged.scripts == alone.scripts and merged.errors == alone.errors == []
    if original is not None:  # the datasource and the network data are the example's own
        assert (booted.datasource, booted.network_data) == (original.datasource,
                                                            original.network_data)
    paths = [f["path"] for f in merged.config["write_files"]]
    assert recipe.GUEST_PATHS.identity in paths and recipe.GUEST_PATHS.unit in paths
    identity = next(f for f in merged.config["write_files"]
                    if f["path"] == recipe.GUEST_PATHS.identity)
    assert f'"transport": "{transport}"' in identity["content"]
    devices = after["spec"]["domain"]["devices"]
    assert devices["watchdog"]["i6300esb"]["action"] == "reset"
    assert devices.get("autoattachVSOCK", False) is (transport == "VSOCK")
    own_disks = example["spec"]["domain"]["devices"].get("disks") or []
    assert devices["disks"][:len(own_disks)] == own_disks


def test_the_member_secret_is_owned_by_the_cluster_and_labelled() -> None:
    secret = member_secret(CLOUD_CONFIG, InjectionSpec())
    meta = secret["metadata"]
    assert meta["name"] == "web-a-guestha-userdata" and meta["namespace"] == "apps"
    assert meta["ownerReferences"] == [{"apiVersion": "guestha.io/v1alpha1",
                                        "kind": "InGuestCluster", "name": "web", "uid": "u-1",
                                        "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"]["guestha.io/member"] == "web-a"
    assert userdata.ours(secret, "web-a") and not userdata.ours(secret, "web-b")
    assert not userdata.ours({"metadata": {"labels": {"guestha.io/member": "web-a"}}}, "web-a")
    with pytest.raises(ValueError, match="too long"):
        userdata.secret_name("v" * 250)


def test_a_guest_never_gets_the_clusters_heartbeat_secret() -> None:
    """The pair keys (guestha.protocol.keys) keep a member from forging another's
    heartbeats to a third only while no guest holds the secret they derive from: the
    user-data carries a bootstrap key derived from it, from which no pair key follows."""
    data = userdata.member_user_data(InjectionSpec.from_spec({"members": [{"name": "web-a"}]}),
                                     "web", "web-a", CREDENTIALS,
                                     CREDENTIALS.issue_member("web-a"), None, AGENT)
    written = [w for w in parse_user_data(data).config["write_files"]
               if w["path"] == recipe.GUEST_PATHS.heartbeat_key]
    assert len(written) == 1 and written[0]["encoding"] == "b64"
    guest_key = base64.b64decode(written[0]["content"])
    secret = CREDENTIALS.heartbeat_key
    assert guest_key and guest_key != secret
    assert guest_key == keys.bootstrap_key(secret, "web")
    assert keys.pair_key(guest_key, "web", "web-b", "web-c") != \
        keys.pair_key(secret, "web", "web-b", "web-c")
