"""What the resource types read from the system: mountinfo, `ip`, `systemctl show`, OCF
exit codes and meta-data, monitor program exit codes."""

from __future__ import annotations

import os

import pytest

from guestha.agent.resources import procfs
from guestha.agent.resources.application import monitor_status
from guestha.agent.resources.base import ActionError
from guestha.agent.resources.ip import parse_addresses, parse_default_route
from guestha.agent.resources.mount import device_path, parse_mountinfo
from guestha.agent.resources.ocf import monitor_result, parse_agent, parse_meta_data
from guestha.agent.resources.process import describe_exit
from guestha.agent.resources.systemd import parse_show, unit_status

pytestmark = pytest.mark.unit

MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 22 7:3 / /srv/my\\040data rw,noatime shared:2 master:1 - ext4 /dev/loop3 rw
37 22 0:44 / /mnt/t rw - tmpfs tmpfs rw,size=1024k
38 37 0:45 / /mnt/t rw - tmpfs other rw
"""


def test_mountinfo() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert [(e.mount_point, e.source, e.fs_type, e.device_number) for e in entries] == [
        ("/", "/dev/vda1", "ext4", "253:1"),
        ("/srv/my data", "/dev/loop3", "ext4", "7:3"),  # optional fields and \040 handled
        ("/mnt/t", "tmpfs", "tmpfs", "0:44"),
        ("/mnt/t", "other", "tmpfs", "0:45"),  # stacked: the last one is on top
    ]


def test_device_tags() -> None:
    assert device_path("LABEL=data") == "/dev/disk/by-label/data"
    assert device_path("UUID=1-2") == "/dev/disk/by-uuid/1-2"
    assert device_path("/dev/vdb") == "/dev/vdb"
    assert device_path("srv:/export") == "srv:/export"


IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
3: v0    inet 10.9.0.1/24 scope global v0\\       valid_lft forever preferred_lft forever
3: v0    inet 10.9.0.7/32 scope global v0\\       valid_lft forever preferred_lft forever
4: eth0@if9    inet6 fd00::7/64 scope global dadfailed tentative \\       valid_lft forever
"""


def test_ip_addresses() -> None:
    found = [(name, str(address), "dadfailed" in flags)
             for name, address, flags in parse_addresses(IP_ADDR)]
    assert found == [("lo", "127.0.0.1/8", False), ("v0", "10.9.0.1/24", False),
                     ("v0", "10.9.0.7/32", False), ("eth0", "fd00::7/64", True)]


def test_default_route() -> None:
    assert parse_default_route("default via 10.0.0.1 dev eth0 proto dhcp metric 100\n") == "eth0"
    assert parse_default_route("") is None


@pytest.mark.parametrize(("props", "state", "message"), [
    ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}, "Online",
     "active (running)"),
    ({"LoadState": "loaded", "ActiveState": "reloading", "SubState": "reload"}, "Online", ""),
    ({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead"}, "Offline",
     "inactive (dead)"),
    ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
      "Result": "exit-code"}, "Offline", "failed: exit-code"),
    # starting, stopping, or waiting to be restarted: processes may run, not Offline
    ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "start"}, "Unknown",
     "activating (start): in transition"),
    ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart"},
     "Unknown", "activating (auto-restart): in transition"),
    ({"LoadState": "loaded", "ActiveState": "deactivating", "SubState": "stop-sigterm"},
     "Unknown", "deactivating (stop-sigterm): in transition"),
    ({"LoadState": "loaded", "ActiveState": "maintenance", "SubState": "cleaning"},
     "Offline", "maintenance (cleaning)"),
    ({"LoadState": "not-found", "ActiveState": "inactive"}, "Offline", "unit not found"),
    ({"LoadState": "masked", "ActiveState": "inactive"}, "Offline", "unit cannot be loaded"),
    ({"LoadState": "loaded", "ActiveState": "weird"}, "Unknown", "unexpected unit state"),
])
def test_systemd_unit_status(props: dict[str, str], state: str, message: str) -> None:
    result = unit_status(props)
    assert result.state == state
    assert result.message.startswith(message)


def test_systemctl_show() -> None:
    assert parse_show("LoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n"
                      ) == {"LoadState": "loaded", "ActiveState": "active",
                            "SubState": "running", "Result": "success"}


@pytest.mark.parametrize(("code", "state", "text"), [
    (0, "Online", ""),
    (7, "Offline", ""),
    (8, "Online", "running promoted"),
    # Failed, as Pacemaker reads them: it may still run, so never Offline.
    (9, "Unknown", "failed: failed while promoted"),
    (1, "Unknown", "failed: generic error (OCF_ERR_GENERIC)"),
    (2, "Unknown", "failed: invalid or missing parameters (OCF_ERR_ARGS)"),
    (3, "Unknown", "failed: action not implemented"),
    (4, "Unknown", "failed: insufficient privileges (OCF_ERR_PERM)"),
    (5, "Unknown", "failed: required software not installed (OCF_ERR_INSTALLED)"),
    (6, "Unknown", "failed: not configured correctly (OCF_ERR_CONFIGURED)"),
    (42, "Unknown", "monitor returned exit status 42"),
])
def test_ocf_exit_codes(code: int, state: str, text: str) -> None:
    result = monitor_result(code, "")
    assert (result.state, result.message.startswith(text)) == (state, True), result


def test_ocf_agent_names() -> None:
    assert parse_agent("heartbeat:Dummy") == ("heartbeat", "Dummy")
    assert parse_agent("ocf:pacemaker:Stateful") == ("pacemaker", "Stateful")
    assert parse_agent("Dummy") is None
    assert parse_agent("lsb:heartbeat:Dummy") is None
    assert parse_agent("heartbeat:../x") is None


META = """<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="example" version="1.0">
<version>1.1</version>
<parameters>
<parameter name="binfile" required="1" unique="0"><content type="string" default=""/></parameter>
<parameter name="pidfile"><content type="string" default="/run/x.pid"/></parameter>
<parameter name="flag" required="0"/>
</parameters>
<actions><action name="start" timeout="20s"/><action name="monitor" depth="0"/></actions>
</resource-agent>
"""


def test_ocf_meta_data() -> None:
    meta = parse_meta_data(META)
    assert list(meta.parameters) == ["binfile", "pidfile", "flag"]
    assert meta.parameters["binfile"].required
    assert not meta.parameters["pidfile"].required
    assert meta.parameters["pidfile"].default == "/run/x.pid"
    assert meta.actions == ("start", "monitor")


@pytest.mark.parametrize(("text", "message"), [
    ("<resource-agent><parameters>", "meta-data is not valid XML: no element found"),
    ("Usage: agent {start|stop|monitor}", "meta-data is not valid XML: syntax error"),
    ("", "meta-data is not valid XML: no element found"),
])
def test_ocf_meta_data_that_is_not_xml_is_named(text: str, message: str) -> None:
    with pytest.raises(ActionError, match=message.replace("|", r"\|")):
        parse_meta_data(text)


def test_ocf_meta_data_with_non_ascii_text() -> None:
    meta = parse_meta_data(META.replace('default="/run/x.pid"', 'default="/run/größe.pid"'))
    assert meta.parameters["pidfile"].default == "/run/größe.pid"


@pytest.mark.parametrize(("code", "state"), [(110, "Online"), (0, "Online"), (100, "Offline"),
                                             (7, "Offline"), (1, None), (99, None)])
def test_monitor_program_codes(code: int, state: str | None) -> None:
    assert monitor_status(code) == state


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"


def test_procfs_identity_of_this_process() -> None:
    me = os.getpid()
    started = procfs.start_time(me)
    assert started is not None and started > 0
    assert procfs.is_running(me, started)
    assert not procfs.is_running(me, started + 1)
    assert procfs.process_group(me) == os.getpgid(me)
    assert len(procfs.boot_id()) == 36
