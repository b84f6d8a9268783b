"""A service group and its resources as one agent runs them, with their defaults.

Field names follow the ServiceGroup API (camelCase in JSON: `restart_limit` is
`restartLimit`, derived from the dataclass fields, so names cannot drift), so what the
operator reads from a ServiceGroup reaches the agent unchanged. The defaults here are the
only copy: the ServiceGroup CRD's defaults must equal them (tests/unit/test_crd_schema.py).
Parsing is strict: unknown fields, wrong types and bad values are refused with a message
naming the field, so a typo in the operator never silently becomes a default in a guest.
Which attributes a resource type takes is the agent's own business (its resource types
check them), as only the agent knows how to run them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.protocol import TYPE_CHECKING, fields

if TYPE_CHECKING:
    from typing import Any

RESOURCE_TYPES = ("Process", "Application", "Systemd", "OCF", "Mount", "IP")
FAILOVER = "Failover"  # online on one member at a time
PARALLEL = "Parallel"  # online on several members at once
GROUP_TYPES = (FAILOVER, PARALLEL)


def _plain(value: Any) -> dict[str, Any]:
    """A dataclass of scalars as JSON (camelCase names)."""
    return {fields.camel(f.name): getattr(value, f.name) for f in dataclasses.fields(value)}


def _integers(cls: Any, raw: Mapping[str, Any], where: str,
              minimum: Mapping[str, int]) -> dict[str, int]:
    """Every integer field of `cls` read from raw (its default when absent)."""
    return {name: fields.integer(raw, fields.camel(name), fields.default(cls, name), where, low)
            for name, low in minimum.items()}


def _section(raw: Mapping[str, Any], key: str, cls: Any, where: str) -> dict[str, Any]:
    """An optional nested object (monitor, timeouts), checked for unknown fields."""
    body = fields.obj(raw.get(key, {}), f"{where}.{key}")
    fields.check_keys(body, fields.json_keys(cls), f"{where}.{key}")
    return body


@dataclass(frozen=True)
class Monitor:
    """How often a resource is checked (VCS MonitorInterval / OfflineMonitorInterval)."""

    interval_seconds: int = 60
    offline_interval_seconds: int = 300
    timeout_seconds: int = 60

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> Monitor:
        return cls(**_integers(cls, raw, where, {"interval_seconds": 1,
                                                 "offline_interval_seconds": 0,
                                                 "timeout_seconds": 1}))

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class Timeouts:
    """Limits on the online, offline and clean actions."""

    online_seconds: int = 300
    offline_seconds: int = 300
    clean_seconds: int = 60

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> Timeouts:
        return cls(**_integers(cls, raw, where, {"online_seconds": 1, "offline_seconds": 1,
                                                 "clean_seconds": 1}))

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class ResourceConfig:
    """One resource of a service group, with VCS's per-resource attributes."""

    name: str
    type: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    critical: bool = True
    restart_limit: int = 0  # VCS RestartLimit
    tolerance_limit: int = 0  # VCS ToleranceLimit
    conf_interval_seconds: int = 600  # VCS ConfInterval
    online_wait_limit: int = 2  # VCS OnlineWaitLimit (monitor cycles after online)
    fault_on_monitor_timeouts: int = 4  # VCS FaultOnMonitorTimeouts (0: never)
    monitor: Monitor = Monitor()
    timeouts: Timeouts = Timeouts()

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ResourceConfig:
        """`where` names the list ("body.groups[shop].resources"); the resource is
        named in messages by its name once it has one."""
        body = fields.obj(raw, where)
        name = body.get("name")
        label = f"{where}[{name}]" if isinstance(name, str) and name else where
        fields.check_keys(body, fields.json_keys(cls), label)
        name = fields.text(body, "name", where)
        rtype = fields.text(body, "type", label, choices=RESOURCE_TYPES)
        attributes = fields.obj(body.get("attributes", {}), f"{label}.attributes")
        return cls(
            name=name,
            type=rtype,
            attributes=dict(attributes),
            depends_on=fields.texts(body, "dependsOn", label),
            critical=fields.boolean(body, "critical", fields.default(cls, "critical"), label),
            **_integers(cls, body, label, {"restart_limit": 0, "tolerance_limit": 0,
                                           "conf_interval_seconds": 0,
                                           "online_wait_limit": 0,
                                           "fault_on_monitor_timeouts": 0}),
            monitor=Monitor.from_dict(_section(body, "monitor", Monitor, label),
                                      f"{label}.monitor"),
            timeouts=Timeouts.from_dict(_section(body, "timeouts", Timeouts, label),
                                        f"{label}.timeouts"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "attributes": dict(self.attributes),
                "dependsOn": list(self.depends_on), "critical": self.critical,
                "restartLimit": self.restart_limit, "toleranceLimit": self.tolerance_limit,
                "confIntervalSeconds": self.conf_interval_seconds,
                "onlineWaitLimit": self.online_wait_limit,
                "faultOnMonitorTimeouts": self.fault_on_monitor_timeouts,
                "monitor": self.monitor.to_dict(), "timeouts": self.timeouts.to_dict()}


@dataclass(frozen=True)
class GroupConfig:
    """A service group as one agent runs it: its resources and their dependencies."""

    name: str
    type: str = FAILOVER
    resources: tuple[ResourceConfig, ...] = ()

    @classmethod
    def from_dict(cls, raw: Any, where: str = "groups") -> GroupConfig:
        """One group, strictly (unknown fields refused at every level). `where` names the
        list it is in; messages name the group as `where[name]`."""
        body = fields.obj(raw, where)
        name = body.get("name")
        label = f"{where}[{name}]" if isinstance(name, str) and name else where
        fields.check_keys(body, fields.json_keys(cls), label)
        name = fields.text(body, "name", where)
        gtype = fields.text(body, "type", label, fields.default(cls, "type"), GROUP_TYPES)
        items = fields.array(body.get("resources", []), f"{label}.resources")
        resources = tuple(
            ResourceConfig.from_dict(r, f"{label}.resources" if isinstance(r, dict)
                                     else f"{label}.resources[{i}]")
            for i, r in enumerate(items))
        names = [r.name for r in resources]
        for r in resources:
            if names.count(r.name) > 1:
                raise fields.FieldError(f"{label}.resources[{r.name}]: duplicate resource "
                                        "name")
            for dep in r.depends_on:
                if dep == r.name or dep not in names:
                    raise fields.FieldError(f"{label}.resources[{r.name}].dependsOn: "
                                            f"{dep!r} is not another resource of this group")
        return cls(name, gtype, resources)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type,
                "resources": [r.to_dict() for r in self.resources]}
