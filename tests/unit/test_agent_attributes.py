"""Resource attributes are checked per type, and every error names the attribute."""

from __future__ import annotations

from typing import Any

import pytest

from guestha.agent import resources
from guestha.agent.groups import GroupRunner, validate_groups
from guestha.agent.resources.base import signal_number
from guestha.protocol.config import GroupConfig
from guestha.protocol.fields import FieldError

pytestmark = pytest.mark.unit


def errors(rtype: str, attributes: dict[str, Any]) -> list[str]:
    return resources.validate(rtype, attributes)


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("Process", {"command": ["sleep", "10"]}),
    ("Process", {"command": ["/usr/bin/app", "--port", "80"], "env": {"A": "1", "B": ""},
                 "workingDirectory": "/srv", "user": "nobody", "stopSignal": "SIGINT",
                 "stopTimeoutSeconds": 0}),
    ("Process", {"command": ["x"], "stopSignal": "TERM"}),
    ("Process", {"command": ["x"], "stopSignal": "15"}),
    ("Application", {"startProgram": "a", "stopProgram": "b", "monitorProgram": "c"}),
    ("Application", {"startProgram": "a", "stopProgram": "b", "pidFiles": ["/run/a.pid"]}),
    ("Application", {"startProgram": "a", "stopProgram": "b", "cleanProgram": "c",
                     "monitorProcesses": ["/usr/sbin/app -f"], "user": "root",
                     "env": {"X": "y"}, "workingDirectory": "/"}),
    ("Systemd", {"unit": "postgresql.service"}),
    ("Systemd", {"unit": "getty@tty1.service"}),
    ("Mount", {"device": "/dev/vdb", "mountPoint": "/srv/data"}),
    ("Mount", {"device": "LABEL=data", "mountPoint": "/srv/data", "fsType": "xfs",
               "options": "noatime,nodev", "createMountPoint": True}),
    ("Mount", {"device": "tmpfs", "mountPoint": "/mnt/t", "fsType": "tmpfs"}),
    ("IP", {"address": "10.0.0.5"}),
    ("IP", {"address": "10.0.0.5", "prefixLength": 24, "interface": "eth0"}),
    ("IP", {"address": "fd00::5", "prefixLength": 64}),
]


@pytest.mark.parametrize(("rtype", "attributes"), GOOD)
def test_good_attributes_pass(rtype: str, attributes: dict[str, Any]) -> None:
    assert errors(rtype, attributes) == []


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("Process", {}, "attributes.command: required for Process, a list of strings"),
    ("Process", {"command": "sleep 10"}, "attributes.command: must be a list of strings"),
    ("Process", {"command": []}, "attributes.command: must not be empty"),
    ("Process", {"command": ["a\0b"]}, "attributes.command: arguments must not contain NUL"),
    ("Process", {"command": ["x"], "env": {"A=B": "1"}},
     "attributes.env: invalid environment variable name(s): 'A=B'"),
    ("Process", {"command": ["x"], "env": {"A": 1}},
     "attributes.env: must be an object of strings"),
    ("Process", {"command": ["x"], "workingDirectory": "srv"},
     "attributes.workingDirectory: must be an absolute path"),
    ("Process", {"command": ["x"], "stopSignal": "SIGFOO"},
     "attributes.stopSignal: not a signal name or number: 'SIGFOO'"),
    ("Process", {"command": ["x"], "stopTimeoutSeconds": -1},
     "attributes.stopTimeoutSeconds: must be >= 0"),
    ("Process", {"command": ["x"], "stopTimeoutSeconds": True},
     "attributes.stopTimeoutSeconds: must be an integer"),
    ("Process", {"command": ["x"], "unit": "a.service"},
     "attributes.unit: not an attribute of Process (it has: command, env"),
    ("Process", {"command": ["x"], "comand": ["y"]},
     "attributes.comand: not an attribute of Process"),
    ("Application", {"stopProgram": "b", "monitorProgram": "c"},
     "attributes.startProgram: required for Application"),
    ("Application", {"startProgram": "a", "stopProgram": "b"},
     "attributes.monitorProgram: an Application needs monitorProgram, pidFiles or "
     "monitorProcesses"),
    ("Application", {"startProgram": "a", "stopProgram": "b", "pidFiles": ["run/a.pid"]},
     "attributes.pidFiles: must be absolute paths: 'run/a.pid'"),
    ("Application", {"startProgram": "a", "stopProgram": "b", "monitorProcesses": [" "]},
     "attributes.monitorProcesses: entries must not be empty"),
    ("Systemd", {}, "attributes.unit: required for Systemd"),
    ("Systemd", {"unit": "a b.service"}, "attributes.unit: not a systemd unit name"),
    ("Systemd", {"unit": "--now"}, "attributes.unit: not a systemd unit name"),
    ("Mount", {"mountPoint": "/srv"}, "attributes.device: required for Mount"),
    ("Mount", {"device": "/dev/vdb", "mountPoint": "srv"},
     "attributes.mountPoint: must be an absolute path other than /"),
    ("Mount", {"device": "/dev/vdb", "mountPoint": "/"},
     "attributes.mountPoint: must be an absolute path other than /"),
    ("Mount", {"device": "/dev/vdb", "mountPoint": "/srv", "createMountPoint": "yes"},
     "attributes.createMountPoint: must be true or false"),
    ("Mount", {"device": "-o", "mountPoint": "/srv"}, "attributes.device: must not start with '-'"),
    ("IP", {}, "attributes.address: required for IP"),
    ("IP", {"address": "10.0.0.300"}, "attributes.address: not an IPv4 or IPv6 address"),
    ("IP", {"address": "10.0.0.3", "prefixLength": 33},
     "attributes.prefixLength: must be 0-32 for 10.0.0.3, got 33"),
    ("IP", {"address": "fd00::3", "prefixLength": 129}, "attributes.prefixLength: must be 0-128"),
    ("IP", {"address": "10.0.0.3", "interface": "eth0:1"},
     "attributes.interface: not an interface name"),
    ("OCF", {}, "attributes.agent: required for OCF"),
    ("OCF", {"agent": "Dummy"}, "attributes.agent: must be provider:type or ocf:provider:type"),
    ("OCF", {"agent": "heartbeat:Dummy", "parameters": {"state": ["a"]}},
     "attributes.parameters: must be an object of strings or integers"),
    ("OCF", {"agent": "heartbeat:Dummy", "depth": -1}, "attributes.depth: must be >= 0"),
    ("Bogus", {}, "type: must be one of Process, Application, Systemd, OCF, Mount, IP"),
]


@pytest.mark.parametrize(("rtype", "attributes", "message"), BAD)
def test_bad_attributes_are_named(rtype: str, attributes: dict[str, Any], message: str) -> None:
    found = errors(rtype, attributes)
    assert any(e.startswith(message) for e in found), found


def test_every_error_is_reported_at_once() -> None:
    found = errors("Process", {"command": "x", "stopSignal": "NOPE", "user": 3})
    assert [e.split(":")[0] for e in found] == [
        "attributes.command", "attributes.user", "attributes.stopSignal"]


def test_ocf_agent_that_is_not_installed_is_named() -> None:
    found = errors("OCF", {"agent": "nosuchprovider:nosuchagent"})
    assert found == ["attributes.agent: nosuchprovider:nosuchagent is not installed in this "
                     "guest (no executable /usr/lib/ocf/resource.d/nosuchprovider/nosuchagent)"]


def test_configure_refuses_bad_groups_with_full_paths(tmp_path: Any) -> None:
    configs = [GroupConfig.from_dict({"name": "shop", "resources": [
        {"name": "app", "type": "Process", "attributes": {"command": "x"}},
        {"name": "data", "type": "Mount", "attributes": {"device": "/dev/vdb"}},
    ]})]
    assert validate_groups(configs) == [
        "groups[shop].resources[app].attributes.command: must be a list of strings, got 'x'",
        "groups[shop].resources[data].attributes.mountPoint: required for Mount, a string",
    ]
    runner = GroupRunner(str(tmp_path), lambda kind, payload: None)
    try:
        with pytest.raises(FieldError, match=r"groups\[shop\]\.resources\[app\]\.attributes"):
            runner.configure(configs)
        assert runner.snapshot() == {"groups": {}}
    finally:
        runner.close()


def test_signal_numbers() -> None:
    assert signal_number("SIGTERM") == 15
    assert signal_number("int") == 2
    assert signal_number("9") == 9
    assert signal_number("SIGNOPE") is None
    assert signal_number("999") is None
