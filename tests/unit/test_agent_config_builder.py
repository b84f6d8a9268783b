"""The configuration the operator puts to each agent (guestha.model.agentconfig)."""

from __future__ import annotations

import pytest

from guestha.model.agentconfig import (
    GroupSource,
    cluster_offline_budget,
    counted_offline_budget,
    held_after_push,
    member_config,
    offline_budget_seconds,
)
from guestha.protocol.config import GroupConfig
from guestha.protocol.desired import DesiredConfig, FencingConfig
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


DEFAULT = FencingConfig.offline_timeout_seconds  # 60


def _group(kind: str, *timeouts: tuple[int, int, int]) -> GroupConfig:
    """A group whose resources have these (offline, clean, monitor) timeouts."""
    return GroupConfig.from_dict({"name": "g", "type": kind, "resources": [
        {"name": f"r{i}", "type": "Process", "attributes": {"command": ["/bin/true"]},
         "timeouts": {"offlineSeconds": off, "cleanSeconds": clean},
         "monitor": {"timeoutSeconds": mon}} for i, (off, clean, mon) in enumerate(timeouts)]},
        "g")


@pytest.mark.parametrize(("groups", "budget"), [
    ([], 1),  # nothing to take offline
    ([_group("Failover", (2, 2, 1))], 6),  # offline + clean + a monitor before and after
    ([_group("Failover", (2, 2, 1), (3, 1, 1))], 12),  # one resource after another
    ([_group("Failover", (2, 2, 1)), _group("Failover", (10, 5, 2))], 19),  # the slowest
    ([_group("Parallel", (50, 50, 50))], 1),  # a self-fence leaves Parallel groups alone
    ([_group("Failover")], 1),  # a group without resources
    ([_group("Failover", (300, 60, 60))], DEFAULT),  # the defaults: never above 60 s
    ([_group("Failover", (29, 29, 1))], DEFAULT),  # exactly the default
])
def test_the_offline_budget_is_what_the_slowest_failover_group_needs_at_most_the_default(
        groups: list[GroupConfig], budget: int) -> None:
    assert offline_budget_seconds(groups) == budget


def test_the_cluster_budget_leaves_out_a_group_no_agent_would_take() -> None:
    bad = GroupSource("bad", {"type": "Failover", "resources": [
        {"name": "app", "type": "Process", "restartLimit": "twice"}]})
    fast = GroupSource("fast", {"type": "Failover", "resources": [
        {"name": "app", "type": "Process", "attributes": {"command": ["/bin/true"]},
         "timeouts": {"offlineSeconds": 1, "cleanSeconds": 1}, "monitor": {"timeoutSeconds": 1}}]})
    assert cluster_offline_budget([bad, fast]) == 4


def test_the_budget_reaches_every_agent() -> None:
    config = member_config("web", "web-c", MEMBERS, {}, [SHOP, LOGS], {}, SECRET, 15, 7)
    assert config.fencing.offline_timeout_seconds == 7
    assert _config("web-a").fencing.offline_timeout_seconds == DEFAULT  # unless given


@pytest.mark.parametrize(("known", "pushed", "confirmed", "held"), [
    (None, 6, True, 6),  # confirmed: known from now on
    (60, 6, True, 6),  # shortened, confirmed
    (None, 6, False, None),  # unconfirmed: still unknown
    (6, 60, False, 60),  # it may have applied the longer one
    (60, 6, False, 60),  # or kept the longer one it had
])
def test_what_an_agent_holds_after_a_push(known: int | None, pushed: int, confirmed: bool,
                                          held: int | None) -> None:
    assert held_after_push(known, pushed, confirmed) == held


@pytest.mark.parametrize(("wanted", "held", "counted"), [
    (6, [6, 6, 6], 6),  # every agent confirmed the short budget
    (6, [6, None, 6], DEFAULT),  # one never confirmed anything to this operator
    (6, [6, 20, 6], 20),  # a silent one still holds an older, longer budget
    (20, [6, 6], 20),  # being lengthened: counted at once
    (6, [], 6),
])
def test_the_engine_counts_the_longest_budget_any_agent_may_hold(
        wanted: int, held: list[int | None], counted: int) -> None:
    assert counted_offline_budget(wanted, held) == counted
