"""The simulator's cloud-init: user-data parsing, cloud-init's merge rules, the run plan."""

from __future__ import annotations

import base64
import gzip
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import pytest

from kubevirtsim.cloudinit.consume import parse_user_data
from kubevirtsim.cloudinit.merging import merge_config, parse_mergers
from kubevirtsim.cloudinit.modules import SCRIPTS_DIR, decode_write_file, shellify
from kubevirtsim.cloudinit.parts import UserDataError, split_parts
from kubevirtsim.cloudinit.planner import build_plan
from kubevirtsim.guestinit import plan as guestplan
from kubevirtsim.guestinit.plan import Fail, Hostname, Log, Run, RunParts, Step, Write

pytestmark = pytest.mark.unit

APPEND = "list(append)+dict(no_replace,recurse_list)+str()"


def multipart(*parts: tuple[str, str] | tuple[str, str, dict[str, str]]) -> bytes:
    outer = MIMEMultipart()
    for item in parts:
        subtype, text = item[0], item[1]
        headers = item[2] if len(item) > 2 else {}
        part = MIMEText(text, subtype, "utf-8")
        for key, value in headers.items():
            if key == "filename":
                part.add_header("Content-Disposition", "attachment", filename=value)
            else:
                part[key] = value
        outer.attach(part)
    return outer.as_bytes()


def steps(plan: guestplan.Plan, stage: str, module: str) -> list[Step]:
    for m in plan.stages[stage]:
        if m.name == module:
            return m.steps
    raise AssertionError(f"no module {module} in {stage}: {plan.module_names(stage)}")


def written(plan: guestplan.Plan, stage: str, module: str) -> dict[str, bytes]:
    return {s.path: s.data for s in steps(plan, stage, module) if isinstance(s, Write)}


# --------------------------------------------------------------------------- parsing


def test_plain_cloud_config() -> None:
    ud = parse_user_data(b"#cloud-config\nhostname: web\nruncmd: [echo hi]\n")
    assert ud.config == {"hostname": "web", "runcmd": ["echo hi"]}
    assert ud.scripts == [] and ud.errors == [] and ud.notes == []


def test_shell_script_becomes_part_001() -> None:
    ud = parse_user_data(b"#!/bin/sh\necho hello\n")
    assert [(s.name, s.content) for s in ud.scripts] == [("part-001", b"#!/bin/sh\necho hello\n")]
    assert ud.config == {}


def test_empty_and_missing_user_data() -> None:
    assert parse_user_data(None).config == {}
    assert parse_user_data(b"").scripts == []


def test_gzip_user_data() -> None:
    ud = parse_user_data(gzip.compress(b"#cloud-config\nruncmd: [date]\n"))
    assert ud.config == {"runcmd": ["date"]}


def test_gzip_of_multipart() -> None:
    data = gzip.compress(multipart(("x-shellscript", "#!/bin/sh\ntrue\n")))
    assert [s.name for s in parse_user_data(data).scripts] == ["part-001"]


def test_multipart_parts_named_by_position_and_filename() -> None:
    data = multipart(
        ("cloud-config", "#cloud-config\nruncmd: [a]\n"),
        ("x-shellscript", "#!/bin/sh\necho two\n"),
        ("x-shellscript", "#!/bin/sh\necho three\n", {"filename": "zz-last.sh"}),
        ("plain", "#!/bin/sh\necho guessed from its first line\n"),
    )
    parts = split_parts(data)
    assert [p.filename for p in parts] == ["part-001", "part-002", "zz-last.sh", "part-004"]
    assert [p.content_type for p in parts] == [
        "text/cloud-config",
        "text/x-shellscript",
        "text/x-shellscript",
        "text/x-shellscript",
    ]
    ud = parse_user_data(data)
    assert [s.name for s in ud.scripts] == ["part-002", "zz-last.sh", "part-004"]


def test_unsupported_parts_are_reported() -> None:
    data = multipart(
        ("x-include-url", "#include\nhttp://example.invalid/x\n"),
        ("jinja2", "## template: jinja\n#cloud-config\nruncmd: [x]\n"),
        ("cloud-config", "#cloud-config\nruncmd: [ok]\n"),
    )
    ud = parse_user_data(data)
    assert len(ud.notes) == 2
    assert "refused" in ud.notes[0] and "x-include-url" in ud.notes[0]
    assert "jinja" in ud.notes[1] and "unsupported" in ud.notes[1]
    assert ud.config == {"runcmd": ["ok"]}
    plan = build_plan("iid", "h", "NoCloud", data)
    logged = [s.message for s in steps(plan, "init", "consume-user-data") if isinstance(s, Log)]
    assert logged == ud.notes


def test_boothook_and_per_frequency_parts() -> None:
    data = multipart(
        ("cloud-boothook", "#cloud-boothook\n#!/bin/sh\necho early\n"),
        ("x-shellscript-per-boot", "#!/bin/sh\necho every boot\n", {"filename": "b.sh"}),
        ("x-shellscript-per-instance", "#!/bin/sh\necho once\n", {"filename": "i.sh"}),
    )
    ud = parse_user_data(data)
    assert [(h.name, h.content) for h in ud.boothooks] == [("part-001", b"#!/bin/sh\necho early\n")]
    assert {k: [s.name for s in v] for k, v in ud.per_frequency.items()} == {
        "per-boot": ["b.sh"],
        "per-instance": ["i.sh"],
    }
    plan = build_plan("iid", "h", "NoCloud", data)
    final = plan.module_names("modules-final")
    assert final.index("scripts-per-boot") < final.index("scripts-per-instance")
    runs = [s for s in steps(plan, "init", "consume-user-data") if isinstance(s, Run)]
    assert runs == [
        Run(argv=("/var/lib/cloud/instances/iid/boothooks/part-001",), env={"INSTANCE_ID": "iid"})
    ]


def test_invalid_yaml_is_an_error_not_a_crash() -> None:
    ud = parse_user_data(b"#cloud-config\nruncmd: [unclosed\n")
    assert ud.config == {} and len(ud.errors) == 1 and "YAML" in ud.errors[0]
    plan = build_plan("iid", "h", "NoCloud", b"#cloud-config\n- a list\n")
    fails = [s for s in steps(plan, "init", "consume-user-data") if isinstance(s, Fail)]
    assert len(fails) == 1 and "mapping" in fails[0].message


# --------------------------------------------------------------------------- merging


def test_default_merge_replaces_top_level_keys() -> None:
    data = multipart(
        ("cloud-config", "#cloud-config\nruncmd: [user]\nhostname: a\n"),
        ("cloud-config", "#cloud-config\nruncmd: [ours]\n"),
    )
    assert parse_user_data(data).config == {"runcmd": ["ours"], "hostname": "a"}


def test_append_merge_keeps_both_parts_lists() -> None:
    user = (
        "#cloud-config\nhostname: users-name\n"
        "write_files:\n  - {path: /etc/user.conf, content: u}\n"
        "runcmd:\n  - echo user\n"
    )
    ours = (
        f"#cloud-config\nmerge_how: '{APPEND}'\nhostname: ignored\n"
        "write_files:\n  - {path: /etc/guestha/agent.conf, content: g}\n"
        "runcmd:\n  - [systemctl, enable, --now, guestha-agent]\n"
        "bootcmd: [echo boot]\n"
    )
    config = parse_user_data(multipart(("cloud-config", user), ("cloud-config", ours))).config
    assert [f["path"] for f in config["write_files"]] == [
        "/etc/user.conf",
        "/etc/guestha/agent.conf",
    ]
    assert config["runcmd"] == ["echo user", ["systemctl", "enable", "--now", "guestha-agent"]]
    assert config["hostname"] == "users-name"  # no_replace keeps the user's scalar
    assert config["bootcmd"] == ["echo boot"]  # keys only in our part are added
    assert "merge_how" not in config


def test_merge_type_header_and_list_form() -> None:
    data = multipart(
        ("cloud-config", "#cloud-config\nruncmd: [a]\n"),
        ("cloud-config", "#cloud-config\nruncmd: [b]\n", {"Merge-Type": APPEND}),
        (
            "cloud-config",
            "#cloud-config\nmerge_how:\n"
            "  - {name: list, settings: [prepend]}\n  - {name: dict, settings: [no_replace,"
            " recurse_list]}\nruncmd: [c]\n",
        ),
    )
    assert parse_user_data(data).config["runcmd"] == ["c", "a", "b"]


def test_nested_dicts_merge_recursively() -> None:
    merged = merge_config(
        {"a": {"x": 1, "l": [1]}}, {"a": {"y": 2, "l": [2]}}, parse_mergers(APPEND)
    )
    assert merged == {"a": {"x": 1, "y": 2, "l": [1, 2]}}
    replaced = merge_config({"a": {"x": 1}}, {"a": {"y": 2}}, parse_mergers("dict(replace)"))
    assert replaced == {"a": {"y": 2}}


def test_bad_merge_spec_names_the_field() -> None:
    with pytest.raises(UserDataError, match="merge_how"):
        parse_mergers("list")
    with pytest.raises(UserDataError, match="unknown merger"):
        parse_mergers("tuple(append)")


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize(
    ("encoding", "content"),
    [
        (None, b"plain text"),
        ("text/plain", b"plain text"),
        ("b64", base64.b64encode(b"plain text")),
        ("base64", base64.b64encode(b"plain text")),
        ("gzip", gzip.compress(b"plain text")),
        ("gz", gzip.compress(b"plain text")),
        ("gz+base64", base64.b64encode(gzip.compress(b"plain text"))),
        ("gzip+b64", base64.b64encode(gzip.compress(b"plain text"))),
    ],
)
def test_write_files_encodings(encoding: str | None, content: bytes) -> None:
    entry: dict[str, Any] = {"path": "/etc/x", "content": content}
    if encoding:
        entry["encoding"] = encoding
    if encoding in (None, "text/plain") or "b" in (encoding or ""):
        entry["content"] = content.decode("latin-1")
    assert decode_write_file(entry, 0).content == b"plain text"


def test_write_files_permissions_append_defer() -> None:
    f = decode_write_file({"path": "/a", "permissions": "0750", "append": True}, 0)
    assert (f.mode, f.append, f.defer, f.content) == (0o750, True, False, b"")
    assert decode_write_file({"path": "/a", "permissions": 0o600}, 0).mode == 0o600
    assert decode_write_file({"path": "/a", "permissions": "0o640"}, 0).mode == 0o640
    assert decode_write_file({"path": "/a"}, 0).mode == 0o644
    assert decode_write_file({"path": "/a", "defer": True}, 0).defer


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"content": "x"}, "write_files[3].path"),
        ({"path": "relative"}, "write_files[3].path"),
        ({"path": "/a", "encoding": "rot13"}, "write_files[3].encoding"),
        ({"path": "/a", "permissions": "rw-r--r--"}, "write_files[3].permissions"),
        ({"path": "/a", "encoding": "gzip", "content": "not gzip"}, "write_files[3].content"),
    ],
)
def test_write_files_errors_name_the_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(UserDataError, match=field.replace("[", r"\[").replace("]", r"\]")):
        decode_write_file(entry, 3)


def test_write_files_deferred_run_in_final_stage() -> None:
    plan = build_plan(
        "iid",
        "h",
        "NoCloud",
        b"#cloud-config\nwrite_files:\n"
        b"  - {path: /now, content: a}\n  - {path: /later, content: b, defer: true}\n"
        b"  - {path: /now2, content: c, owner: 'app:app'}\n",
    )
    assert set(written(plan, "init", "write-files")) == {"/now", "/now2"}
    assert written(plan, "modules-final", "write-files-deferred") == {"/later": b"b"}
    logs = [s.message for s in steps(plan, "init", "write-files") if isinstance(s, Log)]
    assert logs and "owner" in logs[0]


def test_bad_write_files_entry_fails_its_module_after_earlier_entries() -> None:
    plan = build_plan(
        "iid",
        "h",
        "NoCloud",
        b"#cloud-config\nwrite_files:\n  - {path: /ok, content: a}\n  - {content: no path}\n",
    )
    ops = [s.op for s in steps(plan, "init", "write-files")]
    assert ops == ["write", "fail"]


def test_runcmd_forms_are_shellified() -> None:
    script = shellify(["echo 'a b' > /tmp/x", ["touch", "/tmp/with space"], "true"], "runcmd")
    assert script == b"#!/bin/sh\necho 'a b' > /tmp/x\ntouch '/tmp/with space'\ntrue\n"
    with pytest.raises(UserDataError, match=r"runcmd\[1\]"):
        shellify(["ok", 5], "runcmd")
    plan = build_plan("iid", "h", "NoCloud", b"#cloud-config\nruncmd: [[ls, -l], 7]\n")
    assert isinstance(steps(plan, "modules-config", "runcmd")[0], Fail)


def test_skipped_modules_are_logged() -> None:
    plan = build_plan(
        "iid",
        "h",
        "NoCloud",
        b"#cloud-config\npackages: [nginx]\npackage_update: true\nusers: [default]\n",
    )
    assert "package-update-upgrade-install" in plan.module_names("modules-final")
    assert "users-groups" in plan.module_names("init")
    (step,) = steps(plan, "modules-final", "package-update-upgrade-install")
    assert isinstance(step, Log) and "skipped" in step.message and "packages" in step.message


def test_hostname_and_fqdn() -> None:
    def host(cfg: bytes) -> Step:
        return steps(build_plan("iid", "vmi", "NoCloud", cfg), "init", "set_hostname")[0]

    assert host(b"#cloud-config\n") == Hostname(hostname="vmi", fqdn="vmi")
    assert host(b"#cloud-config\nhostname: web\n") == Hostname(hostname="web", fqdn="web")
    assert host(b"#cloud-config\nfqdn: web.example.org\n") == Hostname(
        hostname="web", fqdn="web.example.org"
    )
    assert host(b"#cloud-config\nhostname: db.example.org\n") == Hostname(
        hostname="db", fqdn="db.example.org"
    )
    plan = build_plan("iid", "vmi", "NoCloud", b"#cloud-config\npreserve_hostname: true\n")
    assert "set_hostname" not in plan.module_names("init")


# --------------------------------------------------------------------------- order


def test_run_order_follows_cloud_init() -> None:
    data = multipart(
        (
            "cloud-config",
            "#cloud-config\nbootcmd: [echo boot]\nruncmd: [echo run]\n"
            "write_files:\n  - {path: /a, content: a}\n  - {path: /b, content: b, defer: true}\n"
            "timezone: Europe/Berlin\npackages: [x]\nusers: [default]\n",
        ),
        ("x-shellscript", "#!/bin/sh\necho part\n"),
        ("x-shellscript", "#!/bin/sh\necho late\n", {"filename": "zz.sh"}),
        ("x-shellscript-per-once", "#!/bin/sh\necho once\n"),
    )
    plan = build_plan("iid", "vmi", "NoCloud", data)
    assert list(plan.stages) == ["init-local", "init", "modules-config", "modules-final"]
    assert plan.module_names("init-local") == ["datasource"]
    assert plan.module_names("init") == [
        "consume-user-data",
        "bootcmd",
        "write-files",
        "set_hostname",
        "users-groups",
    ]
    assert plan.module_names("modules-config") == ["timezone", "runcmd"]
    assert plan.module_names("modules-final") == [
        "package-update-upgrade-install",
        "write-files-deferred",
        "scripts-per-once",
        "scripts-user",
        "final-message",
    ]
    # scripts-user is run-parts over the instance's scripts folder: by file name, so the
    # default-named parts run before runcmd, a part named "zz.sh" after it.
    assert steps(plan, "modules-final", "scripts-user") == [
        RunParts(paths=(f"{SCRIPTS_DIR}/part-002", f"{SCRIPTS_DIR}/runcmd", f"{SCRIPTS_DIR}/zz.sh"))
    ]
    # the runcmd script is only written in modules-config
    assert written(plan, "modules-config", "runcmd") == {
        f"{SCRIPTS_DIR}/runcmd": b"#!/bin/sh\necho run\n"
    }


def test_datasource_seeds() -> None:
    nocloud = written(
        build_plan("uid-1", "vm-a", "NoCloud", b"#cloud-config\n", b"version: 2\n"),
        "init-local",
        "datasource",
    )
    assert nocloud["/var/lib/cloud/seed/nocloud/meta-data"] == (
        b"instance-id: uid-1\nlocal-hostname: vm-a\n"
    )
    assert nocloud["/var/lib/cloud/seed/nocloud/user-data"] == b"#cloud-config\n"
    assert nocloud["/var/lib/cloud/seed/nocloud/network-config"] == b"version: 2\n"
    assert nocloud["/var/lib/cloud/data/instance-id"] == b"uid-1\n"
    assert nocloud["/var/lib/cloud/instances/uid-1/user-data.txt"] == b"#cloud-config\n"
    drive = written(
        build_plan("uid-2", "vm-b", "ConfigDrive", b"#!/bin/sh\n"), "init-local", "datasource"
    )
    base = "/var/lib/cloud/seed/config_drive/openstack/latest"
    assert drive[f"{base}/user_data"] == b"#!/bin/sh\n"
    assert b'"uuid": "uid-2"' in drive[f"{base}/meta_data.json"]
    with pytest.raises(UserDataError, match="datasource"):
        build_plan("uid", "h", "Azure", None)


def test_plan_is_json_and_reads_back_the_same_in_the_guest() -> None:
    import json

    plan = build_plan(
        "iid",
        "vmi",
        "NoCloud",
        b"#cloud-config\nwrite_files:\n"
        b"  - {path: /bin.dat, content: !!binary aGVsbG8=}\n"
        b"runcmd: [date]\nsome_date: 2024-01-01\n",
    )
    text = json.dumps(plan.to_json())
    assert json.loads(text)["instance_id"] == "iid"
    assert written(plan, "init", "write-files") == {"/bin.dat": b"hello"}
    # the guest's side reads the very plan the host built, through its JSON text
    assert guestplan.Plan.loads(text) == plan
