"""guestha.model.servicegroup: the ServiceGroup spec read with the CRD's defaults, and
refused with a message naming the field; and its defaults are the CRD's."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.engine import Dependency, GroupState
from guestha.model.servicegroup import (
    DEPENDENCY_KINDS,
    FAILOVER_POLICIES,
    RIGIDITIES,
    GroupDependency,
    ServiceGroupSpec,
    ServicePort,
    System,
)
from guestha.protocol.fields import FieldError, camel

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
MINIMAL = {"cluster": "web", "systems": [{"member": "a", "priority": 0}]}


def crd_spec() -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / "servicegroups.guestha.io.yaml").read_text())
    return dict(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def test_minimal_spec_takes_every_default() -> None:
    spec = ServiceGroupSpec.from_body(MINIMAL)
    assert spec == ServiceGroupSpec("web", (System("a", 0),))
    assert (spec.type, spec.auto_start, spec.failover_policy, spec.auto_failover,
            spec.frozen, spec.online_retry_limit, spec.fault_expiry_seconds, spec.load) == (
        "Failover", True, "Priority", True, False, 0, 0, 0)
    assert spec.resources == () and spec.dependencies == () and spec.service is None


def test_every_crd_field_is_read() -> None:
    assert set(crd_spec()["properties"]) == ServiceGroupSpec.FIELDS


def test_the_crds_defaults_are_the_models() -> None:
    props = crd_spec()["properties"]
    checked = 0
    for f in dataclasses.fields(ServiceGroupSpec):
        schema = props.get(camel(f.name), {})
        if "default" in schema:
            assert schema["default"] == f.default, f.name
            checked += 1
    assert checked >= 8
    dep = props["dependencies"]["items"]["properties"]
    assert dep["kind"]["default"] == GroupDependency.kind
    assert dep["rigidity"]["default"] == GroupDependency.rigidity
    assert dep["kind"]["enum"] == list(DEPENDENCY_KINDS)
    assert dep["rigidity"]["enum"] == list(RIGIDITIES)
    assert props["failoverPolicy"]["enum"] == list(FAILOVER_POLICIES)
    assert props["load"]["maximum"] == 1_000_000


def test_a_full_spec() -> None:
    spec = ServiceGroupSpec.from_body({
        "cluster": "web", "type": "Failover",
        "systems": [{"member": "a", "priority": 1}, {"member": "b", "priority": 0}],
        "autoStart": False, "autoStartList": ["b"], "failoverPolicy": "Load",
        "autoFailover": False, "frozen": True, "onlineRetryLimit": 2,
        "faultExpirySeconds": 60, "load": 40,
        "resources": [{"name": "app", "type": "Process",
                       "attributes": {"command": ["sleep", "1000"]}}],
        "dependencies": [{"serviceGroup": "db", "kind": "OnlineLocal", "rigidity": "Hard"},
                         {"serviceGroup": "net"}],
        "service": {"ports": [{"port": 80, "targetPort": 8080}]},
    })
    assert spec.priority("b") == 0 and spec.priority("c") is None
    assert spec.resources[0].name == "app"
    assert spec.dependencies == (GroupDependency("db", "OnlineLocal", "Hard"),
                                 GroupDependency("net", "OnlineLocal", "Firm"))
    assert spec.service is not None
    assert spec.service.ports == (ServicePort(80, 8080, "TCP", None),)
    group = GroupState.of("shop", spec, wanted_online=True, online_attempts={"a": 1})
    assert group.members == ("b", "a") and group.load == 40 and group.frozen
    assert group.dependencies[0] == Dependency("db", "OnlineLocal", "Hard")
    assert group.online_attempts == {"a": 1} and group.failover_policy == "Load"


@pytest.mark.parametrize(("change", "message"), [
    ({"systems": []}, "spec.systems: at least one system"),
    ({"systems": [{"member": "a", "priority": 0}, {"member": "b", "priority": 0}]},
     "spec.systems[1].priority: 0 is also a's"),
    ({"systems": [{"member": "a", "priority": 0}, {"member": "a", "priority": 1}]},
     "spec.systems[1].member: 'a' is listed twice"),
    ({"systems": [{"member": "a", "priority": 1024}]}, "spec.systems[0].priority"),
    ({"autoStartList": ["z"]}, "spec.autoStartList[0]: 'z' is not one of systems"),
    ({"failoverPolicy": "Random"}, "spec.failoverPolicy: must be one of"),
    ({"load": -1}, "spec.load: must be an integer from 0"),
    ({"onlineRetryLimit": 101}, "spec.onlineRetryLimit"),
    ({"frozen": "yes"}, "spec.frozen: must be true or false"),
    ({"dependencies": [{"serviceGroup": "db", "kind": "OnlineGlobal", "rigidity": "Hard"}]},
     "spec.dependencies[db].rigidity: Hard needs kind OnlineLocal"),
    ({"dependencies": [{"serviceGroup": "db"}, {"serviceGroup": "db"}]},
     "spec.dependencies[db]: listed twice"),
    ({"resources": [{"name": "a", "type": "Process", "dependsOn": ["b"]}]},
     "spec.resources[a].dependsOn: 'b'"),
    ({"service": {"ports": [{"port": 80}, {"port": 81}]}}, "every port needs a name"),
    ({"colour": "blue"}, "spec: unknown field(s) colour"),
    ({"cluster": ""}, "spec.cluster"),
])
def test_bad_values_name_their_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError) as caught:
        ServiceGroupSpec.from_body({**MINIMAL, **change})
    assert message in str(caught.value)
