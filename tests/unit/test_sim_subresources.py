"""The pure parts of the simulator's virt-api: bodies, JSON patches, query parameters,
guest agent answers, websocket frames and the webhook's completion of new VMIs."""

from __future__ import annotations

import datetime as dt
import io
import os
import struct

import pytest

from kubevirtsim import websocket as ws
from kubevirtsim.subresources import (
    StatusError,
    change_request_patch,
    conflict,
    guest_agent_info,
    not_found,
    parse_options,
    parse_port,
    parse_tls,
    running_patch,
)
from kubevirtsim.vm import admitted, vmi_from_vm

pytestmark = pytest.mark.unit


def test_options_accept_json_yaml_and_empty_bodies() -> None:
    assert parse_options(b"", "StopOptions").grace_period is None
    opts = parse_options(b'{"gracePeriod": 3, "dryRun": ["All"]}', "StopOptions")
    assert (opts.grace_period, opts.dry_run) == (3, True)
    assert parse_options(b"paused: true\n", "StartOptions").paused is True
    assert parse_options(b'{"gracePeriodSeconds": 0}', "RestartOptions").grace_period_seconds == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"gracePeriod": "soon"}', "gracePeriod"),
        (b'{"dryRun": "All"}', "dryRun"),
        (b'{"dryRun": ["Some"]}', "dryRun"),
        (b'{"paused": "yes"}', "paused"),
        (b"[1, 2]", "StopOptions"),
        (b"{: nope", "YAML"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(body: bytes, field: str) -> None:
    with pytest.raises(StatusError) as err:
        parse_options(body, "StopOptions")
    assert err.value.code == 400 and field in err.value.message


def test_status_bodies_are_kubernetes_statuses() -> None:
    gone = not_found(("kubevirt.io", "virtualmachine"), "vm1").body()
    assert gone["code"] == 404 and gone["reason"] == "NotFound"
    assert gone["message"] == 'virtualmachine.kubevirt.io "vm1" not found'
    busy = conflict(("kubevirt.io", "virtualmachine"), "vm1", "VM is not running").body()
    assert busy["message"] == (
        'Operation cannot be fulfilled on virtualmachine.kubevirt.io "vm1": VM is not running'
    )


def test_change_requests_patch() -> None:
    stop = [{"action": "Stop", "uid": "u1"}]
    assert change_request_patch({}, stop) == [
        {"op": "add", "path": "/status", "value": {"stateChangeRequests": stop}}
    ]
    vm = {"status": {"created": True, "startFailure": {"consecutiveFailCount": 2}}}
    ops = change_request_patch(vm, stop)
    assert ops[0] == {"op": "test", "path": "/status/stateChangeRequests", "value": None}
    assert ops[1]["op"] == "add" and ops[-1] == {"op": "remove", "path": "/status/startFailure"}
    pending = {"status": {"stateChangeRequests": [{"action": "Start"}]}}
    assert change_request_patch(pending, stop)[1]["op"] == "replace"  # a stop wins
    with pytest.raises(StatusError) as err:
        change_request_patch(pending, [{"action": "Start"}])
    assert err.value.code == 500 and "already underway" in err.value.message


def test_running_patch_keeps_the_field_the_vm_uses() -> None:
    assert running_patch({"spec": {"runStrategy": "Always"}}, False)[1] == {
        "op": "replace",
        "path": "/spec/runStrategy",
        "value": "Halted",
    }
    assert running_patch({"spec": {"running": True}}, False)[1]["path"] == "/spec/running"


def test_vsock_query_parameters() -> None:
    assert parse_port("1234") == 1234
    for bad in ("", "-1", "x", str(1 << 32)):
        with pytest.raises(StatusError):
            parse_port(bad)
    assert parse_tls(None) is True and parse_tls("false") is False and parse_tls("T") is True
    with pytest.raises(StatusError):
        parse_tls("maybe")


def test_guest_agent_info_renames_qemu_guest_agent_fields() -> None:
    info = guest_agent_info(
        {
            "hostname": "h",
            "os": {"pretty-name": "Debian 12", "kernel-release": "6.1", "id": "debian"},
            "timezone": {"zone": "UTC", "offset": 0},
        },
        "7.2",
    )
    assert info["os"] == {"prettyName": "Debian 12", "kernelRelease": "6.1", "id": "debian"}
    assert (info["hostname"], info["timezone"], info["guestAgentVersion"]) == ("h", "UTC, 0", "7.2")


def _client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return bytes([0x80 | opcode]) + length + mask + masked


def test_websocket_frames_round_trip() -> None:
    payload = os.urandom(1000)
    fin, opcode, data = ws.read_frame(io.BytesIO(_client_frame(ws.OP_BINARY, payload)))
    assert (fin, opcode, data) == (True, ws.OP_BINARY, payload)
    assert ws.encode_frame(ws.OP_BINARY, b"hi") == b"\x82\x02hi"
    assert ws.encode_frame(ws.OP_BINARY, bytes(300))[:4] == b"\x82\x7e\x01\x2c"
    with pytest.raises(ws.WebSocketError):
        ws.read_frame(io.BytesIO(b"\x82\x02hi"))  # a client must mask
    # RFC 6455's own example
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_new_vmis_get_the_webhooks_finalizer_and_phase_pending() -> None:
    vm = {
        "metadata": {"name": "v", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"template": {"spec": {}}},
    }
    vmi = admitted(vmi_from_vm(vm), dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert vmi["status"]["phase"] == "Pending"
    assert vmi["metadata"]["finalizers"] == [
        "kubevirt.io/virtualMachineControllerFinalize",
        "foregroundDeleteVirtualMachine",
    ]
