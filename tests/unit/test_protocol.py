"""guestha.protocol, the contract both ends of the channel share: every type reads back
what it writes, refuses a malformed body naming the field, and says what the agent's
source, docs/agent-api.md and docs/agent-openapi.yaml say (one definition, checked)."""

from __future__ import annotations

import ast
import base64
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.protocol import events as kinds
from guestha.protocol.commands import (
    GROUP_ACTIONS,
    ActionAccepted,
    Command,
    ConfigApplied,
    parse_command,
)
from guestha.protocol.config import GROUP_TYPES, RESOURCE_TYPES, Monitor, ResourceConfig, Timeouts
from guestha.protocol.desired import ConfigDocument, DesiredConfig, FencingConfig, HeartbeatConfig
from guestha.protocol.events import Event, EventBatch, EventsGone
from guestha.protocol.fields import FieldError, camel
from guestha.protocol.identity import Identity
from guestha.protocol.keys import pair_key
from guestha.protocol.states import PEER_STATES, SELF_FENCE_STATES
from guestha.protocol.status import Health, StatusReport

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "operator" / "guestha" / "agent"
OPENAPI = yaml.safe_load((REPO / "docs" / "agent-openapi.yaml").read_text())
SCHEMAS = OPENAPI["components"]["schemas"]

RESOURCE = {"name": "app", "type": "Process", "monitorTimeouts": 0, "restarts": 1,
            "state": "Online", "critical": True, "message": "running (pid 42)",
            "lastChange": "2026-11-25T17:04:51.888Z", "pendingChange": False}
STATUS: dict[str, Any] = {
    "cluster": "web", "member": "web-a", "agentVersion": "9f20d99615d346d9",
    "incarnation": 1795626291773, "hostname": "web-a", "uptimeSeconds": 12.5,
    "epoch": 3, "configError": None,
    "groups": {"shop": {"state": "Online", "type": "Failover", "resources": [RESOURCE]},
               "old": {"state": "Stopping", "type": "Parallel", "removing": True,
                       "resources": []}},
    "groupsError": None,
    "peers": [{"member": "web-b", "address": "10.0.0.13", "port": 7481, "state": "Up",
               "lastHeardMilliseconds": 180, "hearsUs": True,
               "incarnation": 1795626291990, "seq": 412,
               "view": {"alive": ["web-a"], "hasQuorum": True, "selfFence": "Idle"}},
              {"member": "web-c", "address": "10.0.0.14", "port": 7481, "state": "Unknown",
               "lastHeardMilliseconds": None, "hearsUs": False, "incarnation": 0, "seq": 0,
               "view": {}}],
    "quorum": {"votes": 4, "present": 3, "operatorInContact": True,
               "operatorLastContactMilliseconds": 20, "hasQuorum": True,
               "since": "2026-11-25T17:04:51.888Z", "lastHeld": "2026-11-25T17:05:03.120Z",
               "members": ["web-a", "web-b", "web-c"], "alivePeers": ["web-b"]},
    "selfFence": {"state": "Idle", "reason": "quorum regained",
                  "since": "2026-11-25T17:04:51.888Z", "secondsLeft": None,
                  "timeoutSeconds": 10.0},
    "watchdog": {"device": "/dev/watchdog", "armed": True, "pets": 120, "petting": True,
                 "stoppedReason": None, "error": None, "hangSeconds": 10.0},
    "events": {"stream": "78749fae92d56aa9", "lastSeq": 42},
    "heartbeat": {"intervalMilliseconds": 500, "peerTimeoutMilliseconds": 3000,
                  "keys": "pair", "counters": {"sent": 10, "accepted": 9}},
    "channel": {"accepted": 5, "refusedCertificate": 0, "open": 1},
    "bundle": {"path": "/usr/local/lib/guestha/guestha-agent.pyz", "rollback": None},
    "tls": {"notBefore": "2026-11-25T17:00:00Z", "notAfter": "2027-11-25T17:00:00Z"},
}


def test_a_status_report_reads_back_what_it_writes() -> None:
    report = StatusReport.from_dict(STATUS)
    assert report.to_dict() == STATUS
    assert StatusReport.from_dict(report.to_dict()) == report
    assert report.group("shop") is not None and report.groups["shop"].resources[0].restarts == 1
    assert report.groups["old"].removing and report.group("none") is None
    older = {k: v for k, v in STATUS.items() if k != "tls"}  # an agent before rotation
    assert StatusReport.from_dict(older).tls is None
    assert report.self_fence.seconds_left is None and report.quorum.alive_peers == ("web-b",)


def test_a_newer_agents_extra_fields_are_ignored() -> None:
    newer = {**STATUS, "somethingNew": {"x": 1},
             "quorum": {**STATUS["quorum"], "weight": 2}}
    assert StatusReport.from_dict(newer) == StatusReport.from_dict(STATUS)


def test_the_bundle_in_status_is_optional() -> None:
    """An agent older than PUT /v1/bundle does not say where it runs from: its report is
    read all the same (the operator rolls it out by its agentVersion)."""
    older = {k: v for k, v in STATUS.items() if k != "bundle"}
    assert StatusReport.from_dict(older).bundle is None
    assert "bundle" not in StatusReport.from_dict(older).to_dict()
    newer = {**STATUS, "bundle": {"path": "/usr/local/lib/guestha/guestha-agent.pyz",
                                  "rollback": {"version": "v2", "reason": "did not come up",
                                               "time": "2026-11-25T17:04:51Z"}}}
    report = StatusReport.from_dict(newer)
    assert report.bundle is not None and report.bundle.rollback is not None
    assert report.bundle.rollback.version == "v2" and report.to_dict() == newer
    with pytest.raises(FieldError, match=r"status\.bundle\.rollback\.version: required"):
        StatusReport.from_dict({**newer, "bundle": {"path": None, "rollback": {}}})


def _without(body: dict[str, Any], path: str) -> dict[str, Any]:
    """A deep copy of `body` with the field at `path` (dots; [n] for list items) removed."""
    copy: Any = yaml.safe_load(yaml.safe_dump(body))
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node = copy
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    del node[parts[-1]]
    return dict(copy)


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy: Any = yaml.safe_load(yaml.safe_dump(body))
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node = copy
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    node[int(last[1:-1]) if last.startswith("[") else last] = value
    return dict(copy)


@pytest.mark.parametrize(("path", "value", "named"), [
    ("member", None, r"status\.member: required"),
    ("epoch", "3", r"status\.epoch: must be an integer"),
    ("epoch", True, r"status\.epoch: must be an integer"),
    ("incarnation", -1, r"status\.incarnation: must be an integer >= 0"),
    ("uptimeSeconds", "long", r"status\.uptimeSeconds: required, a number"),
    ("configError", 7, r"status\.configError: must be a string or null"),
    ("groups", [], r"status\.groups: must be an object"),
    ("groups.shop.state", "Sleeping", r"status\.groups\[shop\]\.state: must be one of"),
    ("groups.shop.type", "Active", r"status\.groups\[shop\]\.type: must be one of"),
    ("groups.shop.resources.[0].state", "Up",
     r"status\.groups\[shop\]\.resources\[0\]\.state: must be one of"),
    ("groups.shop.resources.[0].restarts", 1.5,
     r"status\.groups\[shop\]\.resources\[0\]\.restarts"),
    ("peers.[0].state", "Online", r"status\.peers\[0\]\.state: must be one of Up"),
    ("peers.[1].port", 0, r"status\.peers\[1\]\.port: must be an integer from 1 to 65535"),
    ("quorum.hasQuorum", "yes", r"status\.quorum\.hasQuorum: must be true or false"),
    ("quorum.members", "web-a", r"status\.quorum\.members: must be a list"),
    ("quorum.members", ["web-a", 2], r"status\.quorum\.members\[1\]: must be a string"),
    ("selfFence.state", "Asleep", r"status\.selfFence\.state: must be one of Idle"),
    ("watchdog", None, r"status\.watchdog: must be an object"),
    ("heartbeat.keys", "none", r"status\.heartbeat\.keys: must be one of pair, cluster"),
    ("heartbeat.counters.sent", -1, r"status\.heartbeat\.counters\.sent"),
    ("channel.open", "1", r"status\.channel\.open: must be an integer"),
])
def test_a_malformed_status_report_is_refused_naming_the_field(
        path: str, value: Any, named: str) -> None:
    body = _without(STATUS, path) if value is None and path != "configError" else (
        _with(STATUS, path, value))
    with pytest.raises(FieldError, match=named):
        StatusReport.from_dict(body)


@pytest.mark.parametrize("path", ["cluster", "quorum.votes", "selfFence.since",
                                  "watchdog.armed", "events.lastSeq", "peers.[0].hearsUs",
                                  "groups.shop.resources.[0].lastChange", "heartbeat.counters",
                                  "selfFence.secondsLeft", "watchdog.device"])
def test_every_field_the_protocol_knows_is_required(path: str) -> None:
    label = re.sub(r"\.\[(\d+)\]", r"[\1]", path).replace("groups.shop", "groups[shop]")
    with pytest.raises(FieldError, match=re.escape(f"status.{label.rsplit('.', 1)[0]}")):
        StatusReport.from_dict(_without(STATUS, path))


def test_health_and_answers_read_back_what_they_write() -> None:
    health = Health("web-a", "9f20d99615d346d9", "Idle", True)
    assert Health.from_dict(health.to_dict()) == health
    with pytest.raises(FieldError, match=r"health\.status: must be one of ok"):
        Health.from_dict({**health.to_dict(), "status": "bad"})
    applied = ConfigApplied("op-1", 3, ("shop",), ("web-b",))
    assert ConfigApplied.from_dict(applied.to_dict(), True) == dataclasses.replace(
        applied, replayed=True)
    with pytest.raises(FieldError, match=r"body\.applied: must be true"):
        ConfigApplied.from_dict({**applied.to_dict(), "applied": False})
    accepted = ActionAccepted("shop", "online", "op-2", 3, "Offline")
    assert ActionAccepted.from_dict(accepted.to_dict()) == accepted
    with pytest.raises(FieldError, match=r"body\.action: must be one of online"):
        ActionAccepted.from_dict({**accepted.to_dict(), "action": "start"})
    command, rest = parse_command({**Command(4, "op-3").to_dict(), "reason": "r"},
                                  frozenset({"reason"}))
    assert command == Command(4, "op-3") and rest == {"reason": "r"}


def test_events_read_back_what_they_write() -> None:
    batch = EventBatch("s1", 43, False, (
        Event(43, kinds.RESOURCE_FAULTED, "2026-11-25T17:04:52.101Z",
              {"group": "shop", "resource": "app"}),))
    assert EventBatch.from_dict(batch.to_dict()) == batch
    gone = EventsGone("the agent restarted", "s2", 1, 7)
    assert EventsGone.from_dict(gone.to_dict()) == gone
    body = batch.to_dict()
    body["events"][0]["seq"] = 0
    with pytest.raises(FieldError, match=r"events\.events\[0\]\.seq: must be an integer >= 1"):
        EventBatch.from_dict(body)
    with pytest.raises(FieldError, match=r"events\.more: required"):
        EventBatch.from_dict({"stream": "s", "lastSeq": 0, "events": []})


FULL_CONFIG = {
    "groups": [{"name": "shop", "type": "Failover", "resources": [
        {"name": "data", "type": "Mount", "attributes": {"device": "/dev/vdb",
                                                         "mountPoint": "/srv"}},
        {"name": "app", "type": "Process", "dependsOn": ["data"], "critical": False,
         "restartLimit": 2, "toleranceLimit": 1, "confIntervalSeconds": 60,
         "onlineWaitLimit": 3, "faultOnMonitorTimeouts": 0,
         "monitor": {"intervalSeconds": 5, "offlineIntervalSeconds": 0, "timeoutSeconds": 9},
         "timeouts": {"onlineSeconds": 10, "offlineSeconds": 11, "cleanSeconds": 12},
         "attributes": {"command": ["/bin/sleep", "60"]}}]},
        {"name": "side", "type": "Parallel", "resources": []}],
    "peers": [{"member": "web-a", "address": "10.0.0.12",
               "heartbeatKey": base64.b64encode(pair_key(b"s", "web", "a", "c")).decode()},
              {"member": "web-b", "address": "10.0.0.13", "port": 7482,
               "heartbeatKey": base64.b64encode(pair_key(b"s", "web", "a", "b")).decode()}],
    "heartbeat": {"intervalMilliseconds": 250, "peerTimeoutMilliseconds": 1000},
    "fencing": {"selfFenceTimeoutSeconds": 0, "operatorLeaseSeconds": 20,
                "offlineTimeoutSeconds": 30, "watchdog": False},
}


def test_a_desired_configuration_reads_back_what_it_writes() -> None:
    config = DesiredConfig.from_dict(FULL_CONFIG)
    assert config.to_dict() == {**FULL_CONFIG, "groups": [
        {**FULL_CONFIG["groups"][0], "resources": [
            ResourceConfig.from_dict(FULL_CONFIG["groups"][0]["resources"][0], "r").to_dict(),
            FULL_CONFIG["groups"][0]["resources"][1]]},
        FULL_CONFIG["groups"][1]]}
    assert DesiredConfig.from_dict(config.to_dict()) == config
    assert DesiredConfig.from_dict(DesiredConfig().to_dict()) == DesiredConfig()
    # The member itself may be listed among the peers: it is not its own peer.
    assert [p.member for p in DesiredConfig.from_dict(FULL_CONFIG, "web-a").peers] == ["web-b"]
    document = ConfigDocument.from_dict({"epoch": 3, "config": config.to_dict(), "error": None})
    assert document == ConfigDocument(3, config, None)
    refused = ConfigDocument.from_dict({"epoch": 3, "config": {"groups": 1}, "error": "bad"})
    assert refused.config is None and refused.error == "bad"


def test_every_default_is_written_once_on_its_field() -> None:
    """What an empty body gives is each class's own field defaults, nothing spelled apart."""
    for cls, empty in ((Monitor, Monitor.from_dict({}, "m")),
                       (Timeouts, Timeouts.from_dict({}, "t")),
                       (HeartbeatConfig, HeartbeatConfig.from_dict({})),
                       (FencingConfig, FencingConfig.from_dict({}))):
        assert empty == cls(), cls
    resource = ResourceConfig.from_dict({"name": "r", "type": "IP"}, "r")
    assert resource == ResourceConfig("r", "IP")


def test_an_identity_file_reads_back_what_it_writes() -> None:
    plain = Identity("web", "web-a")
    assert Identity.from_dict(plain.to_dict()) == plain
    full = Identity("web", "web-a", "10.0.0.12", 9000, "VSOCK", "/a.crt", "/a.key", "/ca.crt",
                    "op", "/hb.key", 9001, "/dev/watchdog", "/state")
    assert Identity.from_dict(full.to_dict()) == full
    with pytest.raises(FieldError, match=r"agent\.json: unknown field"):
        Identity.from_dict({**plain.to_dict(), "extra": 1})


def _emitted_kinds() -> set[str]:
    """Every event kind the agent's source passes to an emit (literal or constant)."""
    found: set[str] = set()
    for path in AGENT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("emit", "_emit"):
                candidates = [first]
            elif (name == "append" and isinstance(func, ast.Attribute)
                  and isinstance(func.value, ast.Attribute) and func.value.attr == "_outbox"
                  and isinstance(first, ast.Tuple)):
                candidates = [first.elts[0]]  # a group's outbox: (kind, payload)
            else:
                continue
            for arg in candidates:
                for part in ast.walk(arg):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        found.add(part.value)
                    elif (isinstance(part, ast.Attribute)
                          and isinstance(part.value, ast.Name) and part.value.id == "kinds"):
                        found.add(getattr(kinds, part.attr))
    return found


def test_the_agent_emits_exactly_the_protocols_event_kinds() -> None:
    emitted = _emitted_kinds()
    assert emitted == set(kinds.EVENT_KINDS), (
        f"emitted but not in the protocol: {sorted(emitted - set(kinds.EVENT_KINDS))}; "
        f"in the protocol but never emitted: {sorted(set(kinds.EVENT_KINDS) - emitted)}")
    assert len(set(kinds.EVENT_KINDS)) == len(kinds.EVENT_KINDS)


def test_the_docs_list_every_event_kind() -> None:
    text = (REPO / "docs" / "agent-api.md").read_text()
    listed = text[text.index("Event kinds ("):].split("\n\n", 1)[0]
    assert set(re.findall(r"`([A-Z][A-Za-z]+)`", listed)) == set(kinds.EVENT_KINDS)


def test_the_openapi_document_says_what_the_protocol_says() -> None:
    status = SCHEMAS["Status"]["properties"]
    assert set(status) == set(STATUS)
    assert SCHEMAS["SelfFenceState"]["enum"] == list(SELF_FENCE_STATES)
    assert status["peers"]["items"]["properties"]["state"]["enum"] == list(PEER_STATES)
    assert SCHEMAS["Group"]["properties"]["type"]["enum"] == list(GROUP_TYPES)
    assert SCHEMAS["Resource"]["properties"]["type"]["enum"] == list(RESOURCE_TYPES)
    action = next(p for p in OPENAPI["paths"]["/v1/groups/{name}/{action}"]["post"]["parameters"]
                  if p["name"] == "action")
    assert action["schema"]["enum"] == list(GROUP_ACTIONS)


@pytest.mark.parametrize(("schema", "cls", "bounds"), [
    (SCHEMAS["Resource"], ResourceConfig, {}),
    (SCHEMAS["Resource"]["properties"]["monitor"], Monitor, {}),
    (SCHEMAS["Resource"]["properties"]["timeouts"], Timeouts, {}),
    (SCHEMAS["DesiredConfig"]["properties"]["heartbeat"], HeartbeatConfig,
     HeartbeatConfig.BOUNDS),
    (SCHEMAS["DesiredConfig"]["properties"]["fencing"], FencingConfig, FencingConfig.BOUNDS),
])
def test_the_openapi_defaults_and_bounds_are_the_protocols(
        schema: dict[str, Any], cls: Any, bounds: dict[str, tuple[int, int]]) -> None:
    props = schema["properties"]
    for f in dataclasses.fields(cls):
        if not isinstance(f.default, (bool, int, str)) or f.name in ("name", "type"):
            continue
        assert props[camel(f.name)].get("default") == f.default, f.name
        if f.name in bounds:
            low, high = bounds[f.name]
            assert (props[camel(f.name)]["minimum"], props[camel(f.name)]["maximum"]) == (
                low, high), f.name
