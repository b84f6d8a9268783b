"""The InGuestCluster spec as the operator reads it, and how it picks its member VMs.

Where the spec carries what the agent also knows (the channel's transport and port), the
names and defaults are guestha.protocol's, so the CRD, the operator and the agent agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guestha.protocol import fields
from guestha.protocol.constants import AGENT_PORT, NETWORK, TRANSPORTS


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
class ClusterSpec:
    """What the operator needs of `InGuestCluster.spec` (the rest arrives with later parts)."""

    members: tuple[str, ...]
    selector: Selector | None
    channel: ChannelSpec = ChannelSpec()

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> ClusterSpec:
        members = tuple(str(m["name"]) for m in spec.get("members") or ())
        raw_selector = spec.get("memberSelector")
        return cls(members, Selector.from_body(raw_selector) if raw_selector else None,
                   ChannelSpec.from_body(spec))

    def member_names(self, vm_labels: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
        """The members: listed names, or the VMs (name -> labels) the selector matches."""
        if self.selector is None:
            return self.members
        return tuple(sorted(n for n, labels in vm_labels.items() if self.selector.matches(labels)))
