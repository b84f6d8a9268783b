"""What an InGuestCluster's spec asks of the injection into its members' guests.

The injection mode (spec.injection.mode), whether the guests need a watchdog device
(spec.fencing.watchdog), how the operator reaches the agents (spec.channel, whose transport
and port the agent's identity file carries too) and how long the agent may take to stop
its groups (the systemd unit's stop timeout). Defaults are the CRD's, which are the
protocol's (guestha.protocol.desired.FencingConfig); a bad value is a ValueError naming the
field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guestha.model.cluster import ChannelSpec
from guestha.protocol import fields
from guestha.protocol.desired import FencingConfig

WEBHOOK, TEMPLATE = "Webhook", "Template"
MODES = (WEBHOOK, TEMPLATE)
WATCHDOG_DEVICE = "/dev/watchdog"  # where the guest's kernel puts the i6300esb


@dataclass(frozen=True)
class InjectionSpec:
    """The parts of an InGuestCluster's spec that shape a member's injection."""

    mode: str = WEBHOOK
    watchdog: bool = FencingConfig.watchdog
    channel: ChannelSpec = field(default_factory=ChannelSpec)
    offline_timeout_seconds: int = FencingConfig.offline_timeout_seconds

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> InjectionSpec:
        injection = fields.obj(spec.get("injection") or {}, "spec.injection")
        fencing = fields.obj(spec.get("fencing") or {}, "spec.fencing")
        low, high = FencingConfig.BOUNDS["offline_timeout_seconds"]
        return cls(
            fields.text(injection, "mode", "spec.injection", WEBHOOK, MODES),
            fields.boolean(fencing, "watchdog", FencingConfig.watchdog, "spec.fencing"),
            ChannelSpec.from_body(spec),
            fields.integer(fencing, "offlineTimeoutSeconds",
                           FencingConfig.offline_timeout_seconds, "spec.fencing", low, high),
        )

    @property
    def watchdog_device(self) -> str | None:
        """The identity file's watchdogDevice: the i6300esb's device when fencing uses it."""
        return WATCHDOG_DEVICE if self.watchdog else None
