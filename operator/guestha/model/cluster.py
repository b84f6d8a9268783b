"""The InGuestCluster spec as the operator reads it, and how it picks its member VMs.

Where the spec carries what the agent also knows (the channel's transport and port, the
heartbeat timing, the self-fencing timeout and the watchdog), the names and defaults are
guestha.protocol's, so the CRD, the operator and the agent agree; what only the
operator uses (the fencing policy, the migration allowance, member capacities) is
defined here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guestha.protocol import fields
from guestha.protocol.constants import AGENT_PORT, NETWORK, TRANSPORTS
from guestha.protocol.desired import FencingConfig, HeartbeatConfig

# spec.fencing.policy
FENCE_KUBEVIRT = "KubeVirt"  # power fencing through KubeVirt, self-fencing as fallback
FENCE_SELF = "SelfFence"  # only the members' quorum-lease self-fencing
FENCE_NONE = "None"  # no fencing: groups on a silent member are never moved
FENCING_POLICIES = (FENCE_KUBEVIRT, FENCE_SELF, FENCE_NONE)

# spec.agent.upgrade: how members get the operator's agent bundle after their first boot
UPGRADE_AUTOMATIC = "Automatic"  # one member at a time, while the cluster is healthy
UPGRADE_MANUAL = "Manual"  # never by itself (the rollout is paused)
UPGRADE_MODES = (UPGRADE_AUTOMATIC, UPGRADE_MANUAL)

DEFAULT_CAPACITY = 100  # spec.members[].capacity
MAX_CAPACITY = 1_000_000
MAX_SELF_FENCE_TIMEOUT_SECONDS = 3600
MAX_MIGRATION_PAUSE_SECONDS = 600


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry of a label selector."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        raise ValueError(f"memberSelector.matchExpressions: unknown operator {self.operator!r}")


@dataclass(frozen=True)
class Selector:
    """A metav1.LabelSelector over VirtualMachines."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Selector:
        labels = tuple(sorted((str(k), str(v)) for k, v in
                              (body.get("matchLabels") or {}).items()))
        exprs = tuple(
            Requirement(str(e["key"]), str(e["operator"]),
                        tuple(str(v) for v in e.get("values") or ()))
            for e in body.get("matchExpressions") or ()
        )
        return cls(labels, exprs)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions)


@dataclass(frozen=True)
class ChannelSpec:
    """`spec.channel`: how the operator reaches the members' agents (the agent's identity
    file carries the same transport and port)."""

    transport: str = NETWORK
    port: int = AGENT_PORT

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> ChannelSpec:
        """From an InGuestCluster's spec, with the CRD's defaults (the protocol's); a bad
        value is a ValueError naming the field."""
        channel = fields.obj(spec.get("channel") or {}, "spec.channel")
        return cls(fields.text(channel, "transport", "spec.channel", NETWORK, TRANSPORTS),
                   fields.integer(channel, "port", AGENT_PORT, "spec.channel", 1, 65535))


@dataclass(frozen=True)
class FencingSpec:
    """`spec.fencing`: how a lost member is made safe (DESIGN.md rule 1)."""

    policy: str = FENCE_KUBEVIRT
    self_fence_timeout_seconds: int = FencingConfig.self_fence_timeout_seconds
    watchdog: bool = FencingConfig.watchdog

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> FencingSpec:
        where = "spec.fencing"
        body = fields.obj(spec.get("fencing") or {}, where)
        return cls(
            fields.text(body, "policy", where, cls.policy, FENCING_POLICIES),
            fields.integer(body, "selfFenceTimeoutSeconds", cls.self_fence_timeout_seconds,
                           where, 1, MAX_SELF_FENCE_TIMEOUT_SECONDS),
            fields.boolean(body, "watchdog", cls.watchdog, where))


def heartbeat_from_body(spec: Mapping[str, Any]) -> HeartbeatConfig:
    """`spec.heartbeat`, with the protocol's defaults and checks (the agents get it as is)."""
    return HeartbeatConfig.from_dict(spec.get("heartbeat") or {}, "spec.heartbeat")


@dataclass(frozen=True)
class MigrationSpec:
    """`spec.migration`: a live-migrating member's silence allowance (DESIGN.md)."""

    max_pause_seconds: int = 30

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> MigrationSpec:
        where = "spec.migration"
        body = fields.obj(spec.get("migration") or {}, where)
        return cls(fields.integer(body, "maxPauseSeconds", cls.max_pause_seconds, where, 0,
                                  MAX_MIGRATION_PAUSE_SECONDS))


@dataclass(frozen=True)
class AgentSpec:
    """`spec.agent`: the members' agents after their first boot (controller.rollout)."""

    upgrade: str = UPGRADE_AUTOMATIC

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> AgentSpec:
        where = "spec.agent"
        body = fields.obj(spec.get("agent") or {}, where)
        return cls(fields.text(body, "upgrade", where, cls.upgrade, UPGRADE_MODES))


@dataclass(frozen=True)
class ClusterSpec:
    """What the operator needs of `InGuestCluster.spec`."""

    members: tuple[str, ...]
    selector: Selector | None
    channel: ChannelSpec = ChannelSpec()
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    fencing: FencingSpec = FencingSpec()
    migration: MigrationSpec = MigrationSpec()
    capacities: tuple[tuple[str, int], ...] = ()  # listed members' spec capacity
    agent: AgentSpec = AgentSpec()

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> ClusterSpec:
        """From an InGuestCluster's spec, with the CRD's defaults; a bad value is a
        ValueError naming the field."""
        members: list[str] = []
        capacities: list[tuple[str, int]] = []
        for i, raw in enumerate(fields.array(spec.get("members") or [], "spec.members")):
            at = f"spec.members[{i}]"
            body = fields.obj(raw, at)
            name = fields.text(body, "name", at)
            members.append(name)
            capacities.append((name, fields.integer(body, "capacity", DEFAULT_CAPACITY, at, 0,
                                                    MAX_CAPACITY)))
        raw_selector = spec.get("memberSelector")
        return cls(tuple(members), Selector.from_body(raw_selector) if raw_selector else None,
                   ChannelSpec.from_body(spec), heartbeat_from_body(spec),
                   FencingSpec.from_body(spec), MigrationSpec.from_body(spec),
                   tuple(capacities), AgentSpec.from_body(spec))

    def capacity(self, member: str) -> int:
        """A member's capacity for failoverPolicy Load (members found by memberSelector,
        and members listed without one, have the default)."""
        return dict(self.capacities).get(member, DEFAULT_CAPACITY)

    def member_names(self, vm_labels: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
        """The members: listed names, or the VMs (name -> labels) the selector matches."""
        if self.selector is None:
            return self.members
        return tuple(sorted(n for n, labels in vm_labels.items() if self.selector.matches(labels)))
