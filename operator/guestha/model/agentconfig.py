"""What the operator puts to each member's agent (PUT /v1/config), from the custom
resources as they are.

Pure, so the rule "every member is a peer, with its pair key, even before its VM ever
ran" is tested without an apiserver: the agents count votes from their peer lists, and
two members with different lists could both believe they hold a majority. A
ServiceGroup's `spec.type` and `spec.resources` are the agent's group configuration
as they stand (the CRD and guestha.protocol.config share the names); a group goes to
the members its `spec.systems` lists.

The agents' offline budget (FencingConfig.offline_timeout_seconds: how long a
self-fencing agent may take to take its Failover groups offline) is derived from the
groups' own resource timeouts, never longer than FencingConfig's default: it is part of
the quorum-lease bound (guestha.engine.safety.lease_bound), so groups that stop in
seconds are failed over from a silent member in seconds plus the self-fence timeout,
not after a fixed minute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guestha.protocol import fields
from guestha.protocol.config import FAILOVER, GroupConfig
from guestha.protocol.desired import DesiredConfig, FencingConfig, HeartbeatConfig, PeerConfig
from guestha.protocol.keys import pair_key

NO_FENCING = "None"


@dataclass(frozen=True)
class GroupSource:
    """One ServiceGroup of the cluster: its name and spec as the API holds them."""

    name: str
    spec: Mapping[str, Any]

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(str(s.get("member")) for s in self.spec.get("systems") or ())

    def group_config(self) -> GroupConfig:
        """The agent's configuration of this group; FieldError naming the ServiceGroup and
        its field when the spec has something the agent would refuse."""
        body = {"name": self.name, "type": self.spec.get("type", "Failover"),
                "resources": list(self.spec.get("resources") or ())}
        return GroupConfig.from_dict(body, f"ServiceGroup {self.name}: spec")


def offline_budget_seconds(groups: Sequence[GroupConfig]) -> int:
    """How long an agent may take to take its Failover groups offline (self-fencing or
    stopping): what the slowest Failover group needs, its resources stopped one after
    another, each its offline and clean timeouts and two monitors (before and after, as
    the agent's offline runs them); at least 1 s, and never more than
    FencingConfig.offline_timeout_seconds (the default budget: the agent shares it out
    among its actions, and the guest watchdog resets a guest that overruns it).

    The engine must count the budget the agents HOLD: see the supervisor's use (a
    silent agent may still hold an older, longer one)."""
    needs = [sum(r.timeouts.offline_seconds + r.timeouts.clean_seconds
                 + 2 * r.monitor.timeout_seconds for r in g.resources)
             for g in groups if g.type == FAILOVER]
    low, _ = FencingConfig.BOUNDS["offline_timeout_seconds"]
    return max(low, min(max(needs, default=low), FencingConfig.offline_timeout_seconds))


def held_after_push(known: int | None, pushed: int, confirmed: bool) -> int | None:
    """The offline budget an agent holds after the operator put it `pushed`: that one
    once the agent confirmed it; else (a push that failed may still have been applied)
    the longer of the two, and still unknown (None) when it was unknown before."""
    if confirmed:
        return pushed
    return None if known is None else max(known, pushed)


def counted_offline_budget(wanted: int, held: Sequence[int | None]) -> int:
    """The offline budget the engine counts in the quorum-lease bound: the longest any
    member's agent may hold (`held`, one per member; None where unknown: then
    FencingConfig's default, the most any operator gives), and never less than the one
    being put to them now (`wanted`)."""
    default = FencingConfig.offline_timeout_seconds
    return max([wanted, *(default if h is None else h for h in held)])


def cluster_offline_budget(groups: Sequence[GroupSource]) -> int:
    """`offline_budget_seconds` over the cluster's groups that an agent would take (a
    group it would refuse reaches no agent, so it needs no time there)."""
    configs = []
    for g in groups:
        try:
            configs.append(g.group_config())
        except ValueError:
            continue
    return offline_budget_seconds(configs)


def fencing_config(spec: Mapping[str, Any], operator_lease_seconds: int,
                   offline_timeout_seconds: int = FencingConfig.offline_timeout_seconds
                   ) -> FencingConfig:
    """`spec.fencing` of an InGuestCluster as the agent takes it: policy None means no
    self-fencing either (groups on a silent member are never moved)."""
    fencing = fields.obj(spec.get("fencing") or {}, "spec.fencing")
    policy = fencing.get("policy", "KubeVirt")
    default = FencingConfig()
    timeout = 0 if policy == NO_FENCING else fields.integer(
        fencing, "selfFenceTimeoutSeconds", default.self_fence_timeout_seconds,
        "spec.fencing", 1, 3600)
    return FencingConfig(self_fence_timeout_seconds=timeout,
                         operator_lease_seconds=operator_lease_seconds,
                         offline_timeout_seconds=offline_timeout_seconds,
                         watchdog=fields.boolean(fencing, "watchdog", default.watchdog,
                                                 "spec.fencing"))


def member_config(cluster: str, member: str, members: Sequence[str],
                  addresses: Mapping[str, str | None], groups: Sequence[GroupSource],
                  cluster_spec: Mapping[str, Any], secret: bytes,
                  operator_lease_seconds: int,
                  offline_timeout_seconds: int = FencingConfig.offline_timeout_seconds,
                  accept_secrets: Sequence[bytes] = ()) -> DesiredConfig:
    """The desired configuration of `member`: the groups whose systems list it (by name),
    every other member as a peer (address None while it has none) with the pair key
    derived from the cluster's heartbeat secret (and those of `accept_secrets` accepted
    too: a rotation's overlap), and the cluster's heartbeat and fencing settings, with
    `offline_timeout_seconds` as the offline budget (one value for every member:
    `cluster_offline_budget`)."""
    peers = tuple(PeerConfig(other, addresses.get(other), None,
                             pair_key(secret, cluster, member, other),
                             tuple(pair_key(s, cluster, member, other) for s in accept_secrets))
                  for other in sorted(set(members)) if other != member)
    mine = tuple(sorted((g.group_config() for g in groups if member in g.systems),
                        key=lambda g: g.name))
    return DesiredConfig(
        groups=mine, peers=peers,
        heartbeat=HeartbeatConfig.from_dict(cluster_spec.get("heartbeat") or {},
                                            "spec.heartbeat"),
        fencing=fencing_config(cluster_spec, operator_lease_seconds, offline_timeout_seconds))
