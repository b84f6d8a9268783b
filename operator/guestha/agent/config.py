"""The agent's configuration: its identity file, and the desired state the operator sends.

Field names follow the ServiceGroup and InGuestCluster APIs (camelCase in JSON), so what
the operator reads from a custom resource reaches the agent unchanged. Standard library
only, Python 3.9: the agent runs in guests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RESOURCE_TYPES = ("Process", "Application", "Systemd", "OCF", "Mount", "IP")
GROUP_TYPES = ("Failover", "Parallel")
TRANSPORTS = ("Network", "VSOCK")  # InGuestCluster spec.channel.transport


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, minimum: int = 0) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class Monitor:
    """How often a resource is checked (VCS MonitorInterval / OfflineMonitorInterval)."""

    interval_seconds: int = 60
    offline_interval_seconds: int = 300
    timeout_seconds: int = 60

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> Monitor:
        return cls(
            _int(raw, "intervalSeconds", 60, where, 1),
            _int(raw, "offlineIntervalSeconds", 300, where, 0),
            _int(raw, "timeoutSeconds", 60, where, 1),
        )


@dataclass(frozen=True)
class Timeouts:
    """Limits on the online, offline and clean actions."""

    online_seconds: int = 300
    offline_seconds: int = 300
    clean_seconds: int = 60

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> Timeouts:
        return cls(
            _int(raw, "onlineSeconds", 300, where, 1),
            _int(raw, "offlineSeconds", 300, where, 1),
            _int(raw, "cleanSeconds", 60, where, 1),
        )


@dataclass(frozen=True)
class ResourceConfig:
    """One resource of a service group, with VCS's per-resource attributes."""

    name: str
    type: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    critical: bool = True
    restart_limit: int = 0          # VCS RestartLimit
    tolerance_limit: int = 0        # VCS ToleranceLimit
    conf_interval_seconds: int = 600  # VCS ConfInterval
    online_wait_limit: int = 2      # VCS OnlineWaitLimit (monitor cycles after online)
    fault_on_monitor_timeouts: int = 4  # VCS FaultOnMonitorTimeouts (0: never)
    monitor: Monitor = Monitor()
    timeouts: Timeouts = Timeouts()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> ResourceConfig:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: required, a non-empty string")
        where = f"{where}[{name}]"
        rtype = raw.get("type")
        if rtype not in RESOURCE_TYPES:
            raise ConfigError(f"{where}.type: must be one of {', '.join(RESOURCE_TYPES)}, "
                              f"got {rtype!r}")
        attributes = raw.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise ConfigError(f"{where}.attributes: must be an object")
        depends = raw.get("dependsOn") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise ConfigError(f"{where}.dependsOn: must be a list of resource names")
        return cls(
            name=name,
            type=rtype,
            attributes=dict(attributes),
            depends_on=tuple(depends),
            critical=_bool(raw, "critical", True, where),
            restart_limit=_int(raw, "restartLimit", 0, where),
            tolerance_limit=_int(raw, "toleranceLimit", 0, where),
            conf_interval_seconds=_int(raw, "confIntervalSeconds", 600, where),
            online_wait_limit=_int(raw, "onlineWaitLimit", 2, where),
            fault_on_monitor_timeouts=_int(raw, "faultOnMonitorTimeouts", 4, where),
            monitor=Monitor.from_dict(raw.get("monitor") or {}, f"{where}.monitor"),
            timeouts=Timeouts.from_dict(raw.get("timeouts") or {}, f"{where}.timeouts"),
        )


@dataclass(frozen=True)
class GroupConfig:
    """A service group as one agent runs it: its resources and their dependencies."""

    name: str
    type: str = "Failover"
    resources: tuple[ResourceConfig, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "groups") -> GroupConfig:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: required, a non-empty string")
        where = f"{where}[{name}]"
        gtype = raw.get("type", "Failover")
        if gtype not in GROUP_TYPES:
            raise ConfigError(f"{where}.type: must be Failover or Parallel, got {gtype!r}")
        resources = tuple(ResourceConfig.from_dict(r, f"{where}.resources")
                          for r in raw.get("resources") or ())
        names = [r.name for r in resources]
        for r in resources:
            if names.count(r.name) > 1:
                raise ConfigError(f"{where}.resources[{r.name}]: duplicate resource name")
            for dep in r.depends_on:
                if dep == r.name or dep not in names:
                    raise ConfigError(f"{where}.resources[{r.name}].dependsOn: "
                                      f"{dep!r} is not another resource of this group")
        return cls(name, gtype, resources)


@dataclass(frozen=True)
class Identity:
    """/etc/guestha/agent.json: who this agent is and where its secrets are.

    Everything else (groups, peers, intervals) arrives over the channel.
    """

    cluster: str
    member: str
    listen_address: str = "0.0.0.0"
    port: int = 7480
    # Network: the channel listens on listen_address:port. VSOCK: on the VM's vsock port
    # (guestha.agent.listener), and listen_address is for heartbeats only.
    transport: str = "Network"
    tls_cert: str = "/etc/guestha/tls/agent.crt"
    tls_key: str = "/etc/guestha/tls/agent.key"
    tls_ca: str = "/etc/guestha/tls/ca.crt"
    operator_name: str = "guestha-operator"  # the CN the operator's client certificate has
    heartbeat_key_file: str = "/etc/guestha/heartbeat.key"
    heartbeat_port: int = 7481
    watchdog_device: str | None = None
    state_dir: str = "/var/lib/guestha"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "agent.json") -> Identity:
        values: dict[str, Any] = {}
        for key, attr in (("cluster", "cluster"), ("member", "member")):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ConfigError(f"{where}: {key} is required (a non-empty string)")
            values[attr] = raw[key]
        text = {"listenAddress": "listen_address", "tlsCert": "tls_cert", "tlsKey": "tls_key",
                "tlsCA": "tls_ca", "operatorName": "operator_name",
                "heartbeatKeyFile": "heartbeat_key_file", "watchdogDevice": "watchdog_device",
                "stateDir": "state_dir", "transport": "transport"}
        for key, attr in text.items():
            if key in raw:
                if not isinstance(raw[key], str):
                    raise ConfigError(f"{where}: {key} must be a string")
                values[attr] = raw[key]
        for key, attr in (("port", "port"), ("heartbeatPort", "heartbeat_port")):
            if key in raw:
                values[attr] = _int(raw, key, 0, where, 1)
                if values[attr] > 65535:
                    raise ConfigError(f"{where}: {key} must be a port number (1-65535)")
        if values.get("transport", "Network") not in TRANSPORTS:
            raise ConfigError(f"{where}: transport must be one of {', '.join(TRANSPORTS)}, "
                              f"got {values['transport']!r}")
        unknown = set(raw) - {"cluster", "member", "port", "heartbeatPort", *text}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**values)

    @classmethod
    def load(cls, path: str) -> Identity:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must hold a JSON object")
        return cls.from_dict(raw, path)
