"""The configuration the operator puts to each agent (guestha.model.agentconfig)."""

from __future__ import annotations

import pytest

from guestha.model.agentconfig import GroupSource, member_config
from guestha.protocol.desired import DesiredConfig
from guestha.protocol.fields import FieldError
from guestha.protocol.keys import pair_key

pytestmark = pytest.mark.unit

SECRET = b"s" * 32
MEMBERS = ("web-a", "web-b", "web-c")
SHOP = GroupSource("shop", {"type": "Failover", "systems": [{"member": "web-a"},
                                                            {"member": "web-b"}],
                            "resources": [{"name": "app", "type": "Process",
                                           "attributes": {"command": ["/bin/sleep", "1h"]}}]})
LOGS = GroupSource("logs", {"type": "Parallel", "systems": [{"member": m} for m in MEMBERS],
                            "resources": []})


def _config(member: str, **spec: object) -> DesiredConfig:
    return member_config("web", member, MEMBERS, {"web-a": "10.0.0.1", "web-b": "10.0.0.2"},
                         [SHOP, LOGS], spec, SECRET, 15)


def test_every_other_member_is_a_peer_with_its_pair_key_even_without_an_address() -> None:
    a = _config("web-a")
    assert [(p.member, p.address) for p in a.peers] == [("web-b", "10.0.0.2"),
                                                        ("web-c", None)]
    c = _config("web-c")
    key_ac = next(p.heartbeat_key for p in a.peers if p.member == "web-c")
    key_ca = next(p.heartbeat_key for p in c.peers if p.member == "web-a")
    assert key_ac == key_ca == pair_key(SECRET, "web", "web-a", "web-c")
    # the agent's own parser takes what the operator builds, unchanged
    assert DesiredConfig.from_dict(a.to_dict(), "web-a") == a


def test_a_member_gets_the_groups_whose_systems_list_it() -> None:
    assert [g.name for g in _config("web-a").groups] == ["logs", "shop"]
    assert [g.name for g in _config("web-c").groups] == ["logs"]
    assert _config("web-a").group("shop").resources[0].name == "app"  # type: ignore[union-attr]


def test_cluster_settings_reach_the_agent_and_policy_none_means_no_self_fencing() -> None:
    config = _config("web-a", heartbeat={"intervalMilliseconds": 200,
                                         "peerTimeoutMilliseconds": 1000},
                     fencing={"policy": "KubeVirt", "selfFenceTimeoutSeconds": 4,
                              "watchdog": False})
    assert config.heartbeat.peer_timeout_milliseconds == 1000
    assert (config.fencing.self_fence_timeout_seconds, config.fencing.watchdog,
            config.fencing.operator_lease_seconds) == (4, False, 15)
    assert _config("web-a", fencing={"policy": "None"}).fencing.self_fence_timeout_seconds == 0


def test_a_resource_the_agent_would_refuse_names_the_service_group_and_field() -> None:
    bad = GroupSource("shop", {"systems": [{"member": "web-a"}],
                               "resources": [{"name": "app", "type": "Process",
                                              "restartLimit": "twice"}]})
    with pytest.raises(FieldError, match=r"ServiceGroup shop: spec.*app.*restartLimit"):
        member_config("web", "web-a", MEMBERS, {}, [bad], {}, SECRET, 15)
