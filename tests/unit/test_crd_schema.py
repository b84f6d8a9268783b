"""The CRD files in crds/, checked as data: names, subresources, columns, and a schema that
documents every field, bounds every list and string, and keys its lists.

The control-plane tier (tests/controlplane/test_crds.py) shows what the apiserver makes of
them; this tier catches a missing description or bound before any server runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.model.agentupgrade import STATUS_KEY, AgentUpgrade
from guestha.model.cluster import ChannelSpec
from guestha.protocol.bundle import MAX_VERSION_CHARS
from guestha.protocol.config import (
    GROUP_TYPES,
    RESOURCE_TYPES,
    GroupConfig,
    Monitor,
    ResourceConfig,
    Timeouts,
)
from guestha.protocol.constants import AGENT_PORT, TRANSPORTS
from guestha.protocol.desired import FencingConfig, HeartbeatConfig
from guestha.protocol.fields import FieldError, camel
from guestha.protocol.identity import Identity
from guestha.protocol.states import GROUP_STATES

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
KINDS = {
    "InGuestCluster": (
        "inguestclusters",
        "igc",
        ["Members", "Ready", "Quorum", "Available", "Age"],
    ),
    "ServiceGroup": ("servicegroups", "sg", ["Cluster", "State", "Online-On", "Failovers", "Age"]),
    "Switchover": ("switchovers", "swo", ["Service-Group", "From", "To", "Phase", "Age"]),
}
Schema = dict[str, Any]


def load(kind: str) -> dict[str, Any]:
    plural = KINDS[kind][0]
    docs = [d for d in yaml.safe_load_all((CRDS / f"{plural}.guestha.io.yaml").read_text()) if d]
    assert len(docs) == 1, "one CRD per file"
    return dict(docs[0])


def version(kind: str) -> dict[str, Any]:
    versions = load(kind)["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


def root(kind: str) -> Schema:
    return dict(version(kind)["schema"]["openAPIV3Schema"])


def walk(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    """(path, schema) of `schema` and of everything below it."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from walk(extra, f"{path}{{}}")


def properties(kind: str) -> Iterator[tuple[str, Schema]]:
    """Every property below spec and status (spec and status included)."""
    top = root(kind)["properties"]
    for part in ("spec", "status"):
        for path, schema in walk(top[part], part):
            if not path.endswith(("[]", "{}")):
                yield path, schema


def at(kind: str, path: str) -> Schema:
    schema = root(kind)
    for part in path.split("."):
        schema = schema["items"] if part == "[]" else schema["properties"][part]
    return schema


def test_crd_files_are_the_three_kinds() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(
        f"{plural}.guestha.io.yaml" for plural, _, _ in KINDS.values()
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_names_scope_and_category(kind: str) -> None:
    crd = load(kind)
    plural, short, _ = KINDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.guestha.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("guestha.io", "Namespaced")
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (kind, plural, kind.lower())
    assert names["listKind"] == f"{kind}List"
    assert names["shortNames"] == [short]
    assert names["categories"] == ["guestha"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_served_stored_with_status_subresource(kind: str) -> None:
    v = version(kind)
    assert v["served"] is True and v["storage"] is True
    assert v["subresources"] == {"status": {}}
    assert root(kind)["required"] == ["spec"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_printer_columns(kind: str) -> None:
    columns = version(kind)["additionalPrinterColumns"]
    default_columns = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default_columns == KINDS[kind][2]
    for column in columns:
        assert column["jsonPath"].startswith("."), column
        assert column["type"] in {"string", "integer", "boolean", "date", "number"}, column
        if column["name"] != "Age":
            assert column.get("description"), column
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_property_has_a_description(kind: str) -> None:
    missing = [p for p, s in properties(kind) if not str(s.get("description", "")).strip()]
    assert not missing, f"{kind}: no description on {missing}"
    assert root(kind)["description"].strip()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_structural_and_bounded(kind: str) -> None:
    """Types everywhere, no unknown fields kept, every list and string bounded (the CEL
    cost estimator needs the bounds; they also bound what the operator must handle)."""
    problems = []
    for path, schema in walk(root(kind), ""):
        if "x-kubernetes-preserve-unknown-fields" in schema:
            problems.append(f"{path}: x-kubernetes-preserve-unknown-fields")
        if schema.get("x-kubernetes-int-or-string"):
            continue
        kind_of = schema.get("type")
        if kind_of is None:
            problems.append(f"{path}: no type")
        if path in ("", "metadata", "metadata.name", "apiVersion", "kind"):
            continue
        if kind_of == "array" and "maxItems" not in schema:
            problems.append(f"{path}: array without maxItems")
        if kind_of == "string" and not (
            "maxLength" in schema or "enum" in schema or "format" in schema
        ):
            problems.append(f"{path}: string without maxLength")
        if (
            kind_of == "object"
            and "additionalProperties" in schema
            and ("maxProperties" not in schema)
        ):
            problems.append(f"{path}: map without maxProperties")
        if (
            kind_of in ("integer", "number")
            and path.startswith("spec")
            and not ("minimum" in schema and "maximum" in schema)
        ):
            problems.append(f"{path}: number without minimum and maximum")
    assert not problems, problems


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_list_maps_have_required_keys(kind: str) -> None:
    for path, schema in walk(root(kind), ""):
        if schema.get("x-kubernetes-list-type") == "map":
            item = schema["items"]
            for key in schema["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], (
                    f"{path}: list-map key {key} neither required nor defaulted"
                )
        if schema.get("type") == "array":
            assert "x-kubernetes-list-type" in schema, f"{path}: no x-kubernetes-list-type"


@pytest.mark.parametrize(
    ("kind", "path", "keys"),
    [
        ("InGuestCluster", "spec.members", ["name"]),
        ("InGuestCluster", "status.members", ["name"]),
        ("InGuestCluster", "status.conditions", ["type"]),
        ("ServiceGroup", "spec.systems", ["member"]),
        ("ServiceGroup", "spec.resources", ["name"]),
        ("ServiceGroup", "spec.dependencies", ["serviceGroup"]),
        ("ServiceGroup", "spec.service.ports", ["port", "protocol"]),
        ("ServiceGroup", "status.members", ["name"]),
        ("ServiceGroup", "status.members.[].resources", ["name"]),
        ("ServiceGroup", "status.conditions", ["type"]),
    ],
)
def test_keyed_lists(kind: str, path: str, keys: list[str]) -> None:
    schema = at(kind, path)
    assert schema["x-kubernetes-list-type"] == "map"
    assert schema["x-kubernetes-list-map-keys"] == keys


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_validation_rules_explain_themselves(kind: str) -> None:
    count = 0
    for path, schema in walk(root(kind), ""):
        for rule in schema.get("x-kubernetes-validations", []):
            count += 1
            assert rule["rule"].strip(), path
            assert str(rule.get("message", "")).strip(), f"{path}: rule without message"
            assert rule.get("reason", "FieldValueInvalid") in {
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
                "FieldValueDuplicate",
            }, path
    assert count > 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_defaults_are_documented(kind: str) -> None:
    """A scalar default appears in its field's description, where kubectl explain shows it."""
    for path, schema in properties(kind):
        if "default" not in schema or isinstance(schema["default"], (dict, list)):
            continue
        text = " ".join(schema["description"].split())
        shown = (
            str(schema["default"]).lower()
            if isinstance(schema["default"], bool)
            else str(schema["default"])
        )
        assert "default" in text.lower() and shown in text, f"{path}: default {shown} not told"


DEFAULTS = {
    ("InGuestCluster", "spec.heartbeat.intervalMilliseconds"): 500,
    ("InGuestCluster", "spec.heartbeat.peerTimeoutMilliseconds"): 3000,
    ("InGuestCluster", "spec.fencing.policy"): "KubeVirt",
    ("InGuestCluster", "spec.fencing.selfFenceTimeoutSeconds"): 10,
    ("InGuestCluster", "spec.fencing.watchdog"): True,
    ("InGuestCluster", "spec.channel.transport"): "Network",
    ("InGuestCluster", "spec.channel.port"): 7480,
    ("InGuestCluster", "spec.injection.mode"): "Webhook",
    ("InGuestCluster", "spec.migration.maxPauseSeconds"): 30,
    ("InGuestCluster", "spec.agent.upgrade"): "Automatic",
    ("ServiceGroup", "spec.type"): "Failover",
    ("ServiceGroup", "spec.failoverPolicy"): "Priority",
    ("ServiceGroup", "spec.autoStart"): True,
    ("ServiceGroup", "spec.autoFailover"): True,
    ("ServiceGroup", "spec.frozen"): False,
    ("ServiceGroup", "spec.onlineRetryLimit"): 0,
    ("ServiceGroup", "spec.load"): 0,
    ("InGuestCluster", "spec.members.[].capacity"): 100,
    ("ServiceGroup", "spec.faultExpirySeconds"): 0,
    ("ServiceGroup", "spec.resources.[].critical"): True,
    ("ServiceGroup", "spec.resources.[].restartLimit"): 0,
    ("ServiceGroup", "spec.resources.[].toleranceLimit"): 0,
    ("ServiceGroup", "spec.resources.[].monitor.intervalSeconds"): 60,
    ("ServiceGroup", "spec.resources.[].monitor.offlineIntervalSeconds"): 300,
    ("ServiceGroup", "spec.resources.[].monitor.timeoutSeconds"): 60,
    ("ServiceGroup", "spec.dependencies.[].kind"): "OnlineLocal",
    ("ServiceGroup", "spec.dependencies.[].rigidity"): "Firm",
    ("ServiceGroup", "spec.service.ports.[].protocol"): "TCP",
}


@pytest.mark.parametrize(("kind", "path"), sorted(DEFAULTS))
def test_design_defaults(kind: str, path: str) -> None:
    assert at(kind, path)["default"] == DEFAULTS[kind, path]


# Where the protocol's classes sit in the CRDs: (kind, path of the object whose properties
# are the class's fields in camelCase). The protocol's defaults are the only copy the
# agent and the operator use; the CRDs (and so `kubectl explain`) repeat them.
PROTOCOL_IN_CRDS = [
    (GroupConfig, "ServiceGroup", "spec"),
    (ResourceConfig, "ServiceGroup", "spec.resources.[]"),
    (Monitor, "ServiceGroup", "spec.resources.[].monitor"),
    (Timeouts, "ServiceGroup", "spec.resources.[].timeouts"),
    (HeartbeatConfig, "InGuestCluster", "spec.heartbeat"),
    (FencingConfig, "InGuestCluster", "spec.fencing"),
    (ChannelSpec, "InGuestCluster", "spec.channel"),
]


def shared_defaults() -> list[tuple[str, str, Any, Any]]:
    """(kind, CRD path, the CRD's default, the protocol's default) of every field with a
    scalar default that a protocol class and its CRD object both have."""
    found = []
    for cls, kind, path in PROTOCOL_IN_CRDS:
        props = at(kind, path)["properties"]
        for f in dataclasses.fields(cls):
            name = camel(f.name)
            if name in props and isinstance(f.default, (bool, int, str)):
                found.append((kind, f"{path}.{name}", props[name].get("default"), f.default))
    return found


def test_the_protocols_defaults_are_the_crds() -> None:
    """The agent applies these when the operator leaves them out: one value each."""
    found = shared_defaults()
    paths = {path.rsplit(".", 1)[-1] if "[]" not in path else path for _, path, _, _ in found}
    assert {"spec.resources.[].restartLimit", "spec.resources.[].toleranceLimit",
            "spec.resources.[].critical", "spec.resources.[].confIntervalSeconds",
            "spec.resources.[].onlineWaitLimit", "spec.resources.[].faultOnMonitorTimeouts",
            "spec.resources.[].monitor.intervalSeconds",
            "spec.resources.[].monitor.offlineIntervalSeconds",
            "spec.resources.[].monitor.timeoutSeconds",
            "spec.resources.[].timeouts.onlineSeconds",
            "spec.resources.[].timeouts.offlineSeconds",
            "spec.resources.[].timeouts.cleanSeconds",
            "type", "intervalMilliseconds", "peerTimeoutMilliseconds",
            "selfFenceTimeoutSeconds", "watchdog", "transport", "port"} <= paths
    wrong = [(kind, path, crd, ours) for kind, path, crd, ours in found if crd != ours]
    assert not wrong, f"CRD defaults that are not the protocol's: {wrong}"
    assert ChannelSpec().port == AGENT_PORT == Identity("c", "m").port
    assert ChannelSpec().transport == Identity("c", "m").transport


def test_what_the_crds_accept_the_protocol_accepts() -> None:
    """A value the apiserver lets through must not be refused by the agent: every CRD
    minimum, maximum and enum value of a shared field parses in the protocol."""
    checked = 0
    for cls, kind, path in PROTOCOL_IN_CRDS:
        props = at(kind, path)["properties"]
        for f in dataclasses.fields(cls):
            name, schema = camel(f.name), props.get(camel(f.name))
            if schema is None or not isinstance(f.default, (bool, int, str)):
                continue
            values = [schema[k] for k in ("minimum", "maximum") if k in schema]
            values += list(schema.get("enum", []))
            for value in values:
                parse_field(cls, name, value)
                checked += 1
    assert checked >= 30


def parse_field(cls: Any, name: str, value: Any) -> None:
    """Parses `value` as field `name` of `cls`, the rest at defaults (the heartbeat's
    interval at its minimum, so a timeout at its own minimum is a valid pair)."""
    if cls is ResourceConfig:
        ResourceConfig.from_dict({"name": "r", "type": "Process", name: value}, "r")
    elif cls is GroupConfig:
        GroupConfig.from_dict({"name": "g", name: value})
    elif cls in (Monitor, Timeouts):
        cls.from_dict({name: value}, "x")
    elif cls is HeartbeatConfig:
        low = HeartbeatConfig.BOUNDS["interval_milliseconds"][0]
        body = {"intervalMilliseconds": low, "peerTimeoutMilliseconds": 2 * low, name: value}
        if name == "intervalMilliseconds":
            body["peerTimeoutMilliseconds"] = 2 * value
        HeartbeatConfig.from_dict(body)
    elif cls is FencingConfig:
        FencingConfig.from_dict({name: value})
    else:
        ChannelSpec.from_body({"channel": {name: value}})


def test_the_crds_heartbeat_rule_is_the_agents() -> None:
    """The agent refuses a peer timeout under twice the interval (one lost datagram must
    not lose a peer); the CRD must refuse the same, or an InGuestCluster the apiserver
    took would give every agent a configuration it refuses."""
    rules = [r["rule"] for r in at("InGuestCluster", "spec.heartbeat")["x-kubernetes-validations"]]
    assert rules == ["self.peerTimeoutMilliseconds >= 2 * self.intervalMilliseconds"]
    HeartbeatConfig.from_dict({"intervalMilliseconds": 1000, "peerTimeoutMilliseconds": 2000})
    with pytest.raises(FieldError, match="at least twice"):
        HeartbeatConfig.from_dict({"intervalMilliseconds": 1000, "peerTimeoutMilliseconds": 1999})


def test_the_protocols_enums_are_the_crds() -> None:
    assert at("ServiceGroup", "spec.type")["enum"] == list(GROUP_TYPES)
    assert at("ServiceGroup", "spec.resources.[].type")["enum"] == list(RESOURCE_TYPES)
    assert at("InGuestCluster", "spec.channel.transport")["enum"] == list(TRANSPORTS)
    # A group's state in the ServiceGroup's status is an agent's group state, or the
    # operator's own Switching (moving between members).
    assert set(at("ServiceGroup", "status.state")["enum"]) == {*GROUP_STATES, "Switching"}


def test_defaulted_objects_default_to_their_fields_defaults() -> None:
    """A `default` on an object must agree with its fields' own defaults."""
    for kind in KINDS:
        for path, schema in properties(kind):
            if isinstance(schema.get("default"), dict) and schema["default"]:
                fields = {
                    k: v["default"] for k, v in schema["properties"].items() if "default" in v
                }
                assert schema["default"] == fields, path


ENUMS = {
    ("InGuestCluster", "spec.fencing.policy"): ["KubeVirt", "SelfFence", "None"],
    ("InGuestCluster", "spec.channel.transport"): ["Network", "VSOCK"],
    ("InGuestCluster", "spec.injection.mode"): ["Webhook", "Template"],
    ("ServiceGroup", "spec.type"): ["Failover", "Parallel"],
    ("ServiceGroup", "spec.failoverPolicy"): ["Priority", "RoundRobin", "Load"],
    ("ServiceGroup", "spec.resources.[].type"): [
        "Process",
        "Application",
        "Systemd",
        "OCF",
        "Mount",
        "IP",
    ],
    ("ServiceGroup", "status.state"): [
        "Online",
        "Offline",
        "Partial",
        "Faulted",
        "Starting",
        "Stopping",
        "Switching",
        "Unknown",
    ],
    ("Switchover", "status.phase"): ["Pending", "Running", "Succeeded", "Failed"],
}


@pytest.mark.parametrize(("kind", "path"), sorted(ENUMS))
def test_design_enums(kind: str, path: str) -> None:
    assert at(kind, path)["enum"] == ENUMS[kind, path]


@pytest.mark.parametrize("kind", ["InGuestCluster", "ServiceGroup"])
def test_conditions_are_metav1_conditions(kind: str) -> None:
    item = at(kind, "status.conditions.[]")
    assert sorted(item["required"]) == sorted(
        ["type", "status", "lastTransitionTime", "reason", "message"]
    )
    assert sorted(item["properties"]) == sorted(
        ["type", "status", "observedGeneration", "lastTransitionTime", "reason", "message"]
    )
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_immutable_fields_use_transition_rules() -> None:
    cluster = at("ServiceGroup", "spec.cluster")["x-kubernetes-validations"]
    assert [r["rule"] for r in cluster] == ["self == oldSelf"]
    spec = at("Switchover", "spec")["x-kubernetes-validations"]
    assert [r["rule"] for r in spec] == ["self == oldSelf"]


def test_resource_types_have_their_required_attributes_checked() -> None:
    rules = " ".join(
        r["rule"] for r in at("ServiceGroup", "spec.resources.[]")["x-kubernetes-validations"]
    )
    for kind, attribute in [
        ("Process", "command"),
        ("Mount", "mountPoint"),
        ("OCF", "agent"),
        ("IP", "address"),
        ("Systemd", "unit"),
        ("Application", "startProgram"),
    ]:
        assert f"self.type != '{kind}'" in rules
        assert f"has(self.attributes.{attribute})" in rules


def test_the_agent_upgrade_record_is_the_crds() -> None:
    """status.agentUpgrade as the operator writes it (model.agentupgrade) has the CRD's
    fields, its required ones, and versions no longer than an agent accepts."""
    schema = at("InGuestCluster", f"status.{STATUS_KEY}")
    written = AgentUpgrade("a", "v2", "v1", "2026-11-30T00:00:00Z", ("web",)).to_status()
    assert set(written) == set(schema["properties"])
    assert set(schema["required"]) == set(written) - {"groups"}
    for key in ("version", "previousVersion"):
        assert schema["properties"][key]["maxLength"] == MAX_VERSION_CHARS
    assert schema["properties"]["member"]["maxLength"] == \
        at("InGuestCluster", "status.members.[].name")["maxLength"]
