"""The ServiceGroup spec as the operator reads it: every field of the CRD, its default,
and an error naming the field for a bad value.

The apiserver already checks the schema; this view is what the controller and the
engine use, so it checks again what the engine relies on (one priority per system,
autoStartList within systems, Hard only with OnlineLocal) and gives a message that
names the field (`spec.systems[1].priority: ...`) when an object slipped past (an
older CRD, a direct etcd write). Resources are the protocol's ResourceConfig: the CRD's
resource entries are what the agent receives. Defaults are written once, on the fields
below (and the protocol's); tests/unit/test_model_servicegroup.py checks the CRD says the
same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guestha.protocol import fields
from guestha.protocol.config import FAILOVER, GROUP_TYPES, GroupConfig, ResourceConfig

# spec.failoverPolicy (VCS FailOverPolicy)
PRIORITY = "Priority"
ROUND_ROBIN = "RoundRobin"
LOAD = "Load"
FAILOVER_POLICIES = (PRIORITY, ROUND_ROBIN, LOAD)

# spec.dependencies[].kind and .rigidity (VCS group dependencies)
ONLINE_LOCAL = "OnlineLocal"
ONLINE_GLOBAL = "OnlineGlobal"
ONLINE_REMOTE = "OnlineRemote"
OFFLINE_LOCAL = "OfflineLocal"
DEPENDENCY_KINDS = (ONLINE_LOCAL, ONLINE_GLOBAL, ONLINE_REMOTE, OFFLINE_LOCAL)
SOFT = "Soft"
FIRM = "Firm"
HARD = "Hard"
RIGIDITIES = (SOFT, FIRM, HARD)

# spec.service.ports[].protocol
SERVICE_PROTOCOLS = ("TCP", "UDP", "SCTP")

MAX_PRIORITY = 1023
MAX_RETRY_LIMIT = 100
MAX_FAULT_EXPIRY_SECONDS = 31_536_000
MAX_LOAD = 1_000_000


def _default(cls: Any, name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


@dataclass(frozen=True)
class System:
    """One entry of spec.systems (VCS SystemList)."""

    member: str
    priority: int


@dataclass(frozen=True)
class GroupDependency:
    """One entry of spec.dependencies: this group (the parent) on `service_group`."""

    service_group: str
    kind: str = ONLINE_LOCAL
    rigidity: str = FIRM

    @classmethod
    def from_body(cls, raw: Any, where: str) -> GroupDependency:
        body = fields.obj(raw, where)
        name = fields.text(body, "serviceGroup", where)
        label = f"{where}[{name}]"
        fields.check_keys(body, frozenset({"serviceGroup", "kind", "rigidity"}), label)
        kind = fields.text(body, "kind", label, _default(cls, "kind"), DEPENDENCY_KINDS)
        rigidity = fields.text(body, "rigidity", label, _default(cls, "rigidity"), RIGIDITIES)
        if rigidity == HARD and kind != ONLINE_LOCAL:
            raise fields.FieldError(f"{label}.rigidity: Hard needs kind OnlineLocal, "
                                    f"got {kind}")
        return cls(name, kind, rigidity)


@dataclass(frozen=True)
class ServicePort:
    """One entry of spec.service.ports."""

    port: int
    target_port: int | None = None  # None: port
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """spec.service: the Kubernetes Service whose endpoints follow the group."""

    ports: tuple[ServicePort, ...]
    name: str | None = None  # None: the ServiceGroup's name

    @classmethod
    def from_body(cls, raw: Any, where: str) -> ServiceSpec:
        body = fields.obj(raw, where)
        fields.check_keys(body, frozenset({"name", "ports"}), where)
        name = fields.text(body, "name", where, "") or None
        items = fields.array(body.get("ports"), f"{where}.ports")
        if not items:
            raise fields.FieldError(f"{where}.ports: at least one port is needed")
        ports = []
        for i, raw_port in enumerate(items):
            at = f"{where}.ports[{i}]"
            p = fields.obj(raw_port, at)
            fields.check_keys(p, frozenset({"name", "port", "targetPort", "protocol"}), at)
            ports.append(ServicePort(
                port=fields.integer(p, "port", None, at, 1, 65535),
                target_port=(fields.integer(p, "targetPort", None, at, 1, 65535)
                             if "targetPort" in p else None),
                protocol=fields.text(p, "protocol", at, "TCP", SERVICE_PROTOCOLS),
                name=fields.text(p, "name", at, "") or None))
        if len(ports) > 1 and any(p.name is None for p in ports):
            raise fields.FieldError(f"{where}.ports: with more than one port, every port "
                                    "needs a name")
        return cls(tuple(ports), name)


@dataclass(frozen=True)
class ServiceGroupSpec:
    """`ServiceGroup.spec`, typed, with the CRD's defaults."""

    cluster: str
    systems: tuple[System, ...]
    type: str = FAILOVER
    auto_start: bool = True
    auto_start_list: tuple[str, ...] = ()
    failover_policy: str = PRIORITY
    auto_failover: bool = True
    frozen: bool = False
    online_retry_limit: int = 0
    fault_expiry_seconds: int = 0  # 0: faults stay until cleared
    load: int = 0  # what the group takes of a member's capacity (failoverPolicy Load)
    resources: tuple[ResourceConfig, ...] = ()
    dependencies: tuple[GroupDependency, ...] = ()
    service: ServiceSpec | None = None

    FIELDS = frozenset({"cluster", "type", "systems", "autoStart", "autoStartList",
                        "failoverPolicy", "autoFailover", "frozen", "onlineRetryLimit",
                        "faultExpirySeconds", "load", "resources", "dependencies",
                        "service"})

    @classmethod
    def from_body(cls, spec: Mapping[str, Any], where: str = "spec") -> ServiceGroupSpec:
        """From a ServiceGroup's spec; a bad value is a FieldError (a ValueError) whose
        message names the field."""
        body = fields.obj(dict(spec), where)
        fields.check_keys(body, cls.FIELDS, where)
        d: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(cls)}
        systems = _systems(body, where)
        members = [s.member for s in systems]
        auto_start_list = fields.texts(body, "autoStartList", where)
        for i, m in enumerate(auto_start_list):
            if m not in members:
                raise fields.FieldError(f"{where}.autoStartList[{i}]: {m!r} is not one of "
                                        f"systems ({', '.join(members)})")
        group = _resources(body, where)
        deps = tuple(GroupDependency.from_body(raw, f"{where}.dependencies")
                     for raw in fields.array(body.get("dependencies", []),
                                             f"{where}.dependencies"))
        names = [dep.service_group for dep in deps]
        for name in names:
            if names.count(name) > 1:
                raise fields.FieldError(f"{where}.dependencies[{name}]: listed twice")
        return cls(
            cluster=fields.text(body, "cluster", where),
            systems=systems,
            type=fields.text(body, "type", where, d["type"], GROUP_TYPES),
            auto_start=fields.boolean(body, "autoStart", d["auto_start"], where),
            auto_start_list=auto_start_list,
            failover_policy=fields.text(body, "failoverPolicy", where, d["failover_policy"],
                                        FAILOVER_POLICIES),
            auto_failover=fields.boolean(body, "autoFailover", d["auto_failover"], where),
            frozen=fields.boolean(body, "frozen", d["frozen"], where),
            online_retry_limit=fields.integer(body, "onlineRetryLimit",
                                              d["online_retry_limit"], where, 0,
                                              MAX_RETRY_LIMIT),
            fault_expiry_seconds=fields.integer(body, "faultExpirySeconds",
                                                d["fault_expiry_seconds"], where, 0,
                                                MAX_FAULT_EXPIRY_SECONDS),
            load=fields.integer(body, "load", d["load"], where, 0, MAX_LOAD),
            resources=group.resources,
            dependencies=deps,
            service=(ServiceSpec.from_body(body["service"], f"{where}.service")
                     if body.get("service") is not None else None),
        )

    def priority(self, member: str) -> int | None:
        for s in self.systems:
            if s.member == member:
                return s.priority
        return None


def _resources(body: Mapping[str, Any], where: str) -> GroupConfig:
    """The resources, checked as the agent checks them (names unique, dependsOn within
    the group); messages name `spec.resources[...]`."""
    try:
        return GroupConfig.from_dict({"name": "_", "resources": body.get("resources", [])},
                                     where)
    except fields.FieldError as e:
        raise fields.FieldError(str(e).replace(f"{where}[_]", where, 1)) from None


def _systems(body: Mapping[str, Any], where: str) -> tuple[System, ...]:
    items = fields.array(body.get("systems"), f"{where}.systems")
    if not items:
        raise fields.FieldError(f"{where}.systems: at least one system is needed")
    systems: list[System] = []
    for i, raw in enumerate(items):
        at = f"{where}.systems[{i}]"
        s = fields.obj(raw, at)
        fields.check_keys(s, frozenset({"member", "priority"}), at)
        system = System(fields.text(s, "member", at),
                        fields.integer(s, "priority", None, at, 0, MAX_PRIORITY))
        for other in systems:
            if other.member == system.member:
                raise fields.FieldError(f"{at}.member: {system.member!r} is listed twice")
            if other.priority == system.priority:
                raise fields.FieldError(f"{at}.priority: {system.priority} is also "
                                        f"{other.member}'s; priorities must be distinct")
        systems.append(system)
    return tuple(systems)
