"""What the operator puts to each member's agent (PUT /v1/config), from the custom
resources as they are.

Pure, so the rule "every member is a peer, with its pair key, even before its VM ever
ran" is tested without an apiserver: the agents count votes from their peer lists, and
two members with different lists could both believe they hold a majority. A
ServiceGroup's `spec.type` and `spec.resources` are the agent's group configuration
as they stand (the CRD and guestha.protocol.config share the names); a group goes to
the members its `spec.systems` lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guestha.protocol import fields
from guestha.protocol.config import GroupConfig
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


def fencing_config(spec: Mapping[str, Any], operator_lease_seconds: int) -> FencingConfig:
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
                         offline_timeout_seconds=default.offline_timeout_seconds,
                         watchdog=fields.boolean(fencing, "watchdog", default.watchdog,
                                                 "spec.fencing"))


def member_config(cluster: str, member: str, members: Sequence[str],
                  addresses: Mapping[str, str | None], groups: Sequence[GroupSource],
                  cluster_spec: Mapping[str, Any], secret: bytes,
                  operator_lease_seconds: int) -> DesiredConfig:
    """The desired configuration of `member`: the groups whose systems list it (by name),
    every other member as a peer (address None while it has none) with the pair key
    derived from the cluster's heartbeat secret, and the cluster's heartbeat and fencing
    settings."""
    peers = tuple(PeerConfig(other, addresses.get(other), None,
                             pair_key(secret, cluster, member, other))
                  for other in sorted(set(members)) if other != member)
    mine = tuple(sorted((g.group_config() for g in groups if member in g.systems),
                        key=lambda g: g.name))
    return DesiredConfig(
        groups=mine, peers=peers,
        heartbeat=HeartbeatConfig.from_dict(cluster_spec.get("heartbeat") or {},
                                            "spec.heartbeat"),
        fencing=fencing_config(cluster_spec, operator_lease_seconds))
