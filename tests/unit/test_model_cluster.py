"""guestha.model.cluster: the InGuestCluster spec's heartbeat, fencing, migration and
member capacities, with the CRD's defaults, and the engine's Settings made from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.engine import Settings
from guestha.model.cluster import (
    DEFAULT_CAPACITY,
    FENCING_POLICIES,
    UPGRADE_AUTOMATIC,
    UPGRADE_MODES,
    AgentSpec,
    ClusterSpec,
    FencingSpec,
    MigrationSpec,
)
from guestha.protocol.desired import HeartbeatConfig
from guestha.protocol.fields import FieldError

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"


def crd_spec() -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / "inguestclusters.guestha.io.yaml").read_text())
    return dict(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def test_defaults() -> None:
    spec = ClusterSpec.from_body({"members": [{"name": "a"}]})
    assert spec.heartbeat == HeartbeatConfig(500, 3000)
    assert spec.fencing == FencingSpec("KubeVirt", 10, True)
    assert spec.migration == MigrationSpec(30)
    assert spec.agent == AgentSpec(UPGRADE_AUTOMATIC)
    assert spec.capacity("a") == DEFAULT_CAPACITY == 100
    assert spec.capacity("found-by-selector") == 100


def test_the_crds_defaults_are_the_models() -> None:
    props = crd_spec()["properties"]
    assert props["fencing"]["properties"]["policy"]["default"] == FencingSpec.policy
    assert props["fencing"]["properties"]["policy"]["enum"] == list(FENCING_POLICIES)
    assert (props["migration"]["properties"]["maxPauseSeconds"]["default"]
            == MigrationSpec.max_pause_seconds)
    assert props["agent"]["properties"]["upgrade"]["default"] == AgentSpec.upgrade
    assert props["agent"]["properties"]["upgrade"]["enum"] == list(UPGRADE_MODES)
    member = props["members"]["items"]["properties"]
    assert member["capacity"]["default"] == DEFAULT_CAPACITY


def test_everything_set() -> None:
    spec = ClusterSpec.from_body({
        "members": [{"name": "a", "capacity": 50}, {"name": "b"}],
        "heartbeat": {"intervalMilliseconds": 200, "peerTimeoutMilliseconds": 1000},
        "fencing": {"policy": "SelfFence", "selfFenceTimeoutSeconds": 20, "watchdog": False},
        "migration": {"maxPauseSeconds": 0},
    })
    assert spec.members == ("a", "b") and spec.capacity("a") == 50
    settings = Settings.of(spec, lease_margin=2.0)
    assert settings == Settings(1.0, 20.0, "SelfFence", False, 2.0, 0.0, 15.0, 60.0)


@pytest.mark.parametrize(("spec", "message"), [
    ({"members": [{"name": "a", "capacity": -1}]}, "spec.members[0].capacity"),
    ({"members": [{}]}, "spec.members[0].name: required"),
    ({"fencing": {"policy": "Stonith"}}, "spec.fencing.policy: must be one of"),
    ({"fencing": {"selfFenceTimeoutSeconds": 0}}, "spec.fencing.selfFenceTimeoutSeconds"),
    ({"heartbeat": {"intervalMilliseconds": 1000, "peerTimeoutMilliseconds": 1500}},
     "spec.heartbeat.peerTimeoutMilliseconds: must be at least twice"),
    ({"migration": {"maxPauseSeconds": 601}}, "spec.migration.maxPauseSeconds"),
    ({"agent": {"upgrade": "Sometimes"}}, "spec.agent.upgrade: must be one of Automatic"),
])
def test_bad_values_name_their_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError) as caught:
        ClusterSpec.from_body(spec)
    assert message in str(caught.value)
