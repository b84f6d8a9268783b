"""The desired configuration the operator puts (PUT /v1/config), checked strictly.

Unknown fields, wrong types and bad values are refused with a message naming the field,
so a typo in the operator never silently becomes a default in the guest. Group and
resource fields are those of `config.GroupConfig` / `config.ResourceConfig` (their
camelCase JSON names are derived from the dataclass fields, so the two cannot drift).
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guestha.agent.config import ConfigError, GroupConfig, Monitor, ResourceConfig, Timeouts

MAX_OPERATION_ID = 128


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _keys(cls: Any) -> frozenset[str]:
    return frozenset(_camel(f.name) for f in dataclasses.fields(cls))


def check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list, got {type(value).__name__}")
    return value


def _number(raw: Mapping[str, Any], key: str, default: int, where: str, minimum: int,
            maximum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(f"{where}.{key}: must be an integer from {minimum} to {maximum}, "
                          f"got {value!r}")
    return value


def parse_group(raw: Any, where: str) -> GroupConfig:
    """One group, strictly (unknown fields refused at every level)."""
    group = _object(raw, where)
    name = group.get("name")
    label = f"{where}[{name}]" if isinstance(name, str) and name else where
    check_keys(group, _keys(GroupConfig), label)
    for i, res in enumerate(_list(group.get("resources", []), f"{label}.resources")):
        res = _object(res, f"{label}.resources[{i}]")
        rname = res.get("name")
        rlabel = f"{label}.resources[{rname if isinstance(rname, str) and rname else i}]"
        check_keys(res, _keys(ResourceConfig), rlabel)
        for key, cls in (("monitor", Monitor), ("timeouts", Timeouts)):
            if key in res:
                check_keys(_object(res[key], f"{rlabel}.{key}"), _keys(cls), f"{rlabel}.{key}")
        if "attributes" in res:
            _object(res["attributes"], f"{rlabel}.attributes")
        if "dependsOn" in res:
            _list(res["dependsOn"], f"{rlabel}.dependsOn")
    return GroupConfig.from_dict(group, where)


MIN_HEARTBEAT_KEY = 16  # bytes of a pair key (guestha.agent.heartbeat.pair_key gives 32)


@dataclass(frozen=True)
class PeerConfig:
    member: str
    address: str
    port: int | None = None  # None: this agent's own heartbeatPort
    # The pair key of this member and the peer (heartbeatKey, base64); None: the identity
    # file's cluster key, until the operator gives pair keys (guestha.agent.heartbeat).
    heartbeat_key: bytes | None = field(default=None, repr=False)


def _heartbeat_key(p: Mapping[str, Any], where: str) -> bytes | None:
    if "heartbeatKey" not in p:
        return None
    raw = p["heartbeatKey"]
    try:
        key = base64.b64decode(raw if isinstance(raw, str) else "", validate=True)
    except ValueError:
        key = b""
    if len(key) < MIN_HEARTBEAT_KEY:
        raise ConfigError(f"{where}.heartbeatKey: must be base64 of at least "
                          f"{MIN_HEARTBEAT_KEY} bytes (the pair key of this member and the "
                          f"peer)")
    return key


@dataclass(frozen=True)
class HeartbeatConfig:
    interval_milliseconds: int = 500
    peer_timeout_milliseconds: int = 3000


@dataclass(frozen=True)
class FencingConfig:
    """How this member fences itself; the defaults here are the only copy in the agent
    (the InGuestCluster CRD's spec.fencing defaults must equal them: a unit test checks)."""

    self_fence_timeout_seconds: int = 10  # 0: never self-fence
    operator_lease_seconds: int = 15
    offline_timeout_seconds: int = 60  # how long taking the Failover groups offline may take
    # InGuestCluster spec.fencing.watchdog: fencing relies on the guest's watchdog, so a
    # Failover group may only go online here while it is armed.
    watchdog: bool = True


@dataclass(frozen=True)
class DesiredConfig:
    """Everything the operator decides for one agent."""

    groups: tuple[GroupConfig, ...] = ()
    peers: tuple[PeerConfig, ...] = ()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    fencing: FencingConfig = FencingConfig()

    def group(self, name: str) -> GroupConfig | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None

    @classmethod
    def from_dict(cls, raw: Any, member: str = "", where: str = "config") -> DesiredConfig:
        body = _object(raw, where)
        check_keys(body, frozenset({"groups", "peers", "heartbeat", "fencing"}), where)
        groups = tuple(parse_group(g, f"{where}.groups[{i}]" if not isinstance(g, dict)
                                   else f"{where}.groups")
                       for i, g in enumerate(_list(body.get("groups", []), f"{where}.groups")))
        names = [g.name for g in groups]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{where}.groups[{name}]: duplicate group name")
        peers = []
        for i, p in enumerate(_list(body.get("peers", []), f"{where}.peers")):
            p = _object(p, f"{where}.peers[{i}]")
            pmember = p.get("member")
            if not isinstance(pmember, str) or not pmember:
                raise ConfigError(f"{where}.peers[{i}].member: required, a non-empty string")
            plabel = f"{where}.peers[{pmember}]"
            check_keys(p, frozenset({"member", "address", "port", "heartbeatKey"}), plabel)
            address = p.get("address")
            try:
                ipaddress.ip_address(address if isinstance(address, str) else "")
            except ValueError as e:
                raise ConfigError(f"{plabel}.address: must be an IP address, "
                                  f"got {address!r}") from e
            port = _number(p, "port", 1, plabel, 1, 65535) if "port" in p else None
            key = _heartbeat_key(p, plabel)
            if pmember != member:  # this agent itself may be listed; it is not its own peer
                peers.append(PeerConfig(pmember, str(address), port, key))
        members = [p.member for p in peers]
        for name in members:
            if members.count(name) > 1:
                raise ConfigError(f"{where}.peers[{name}]: duplicate member")
        keyed = [p.member for p in peers if p.heartbeat_key is not None]
        if keyed and len(keyed) < len(peers):
            missing = next(p.member for p in peers if p.heartbeat_key is None)
            raise ConfigError(f"{where}.peers[{missing}].heartbeatKey: required, as other "
                              f"peers have one (pair keys replace the cluster key for every "
                              f"peer at once)")
        hb_raw = _object(body.get("heartbeat", {}), f"{where}.heartbeat")
        check_keys(hb_raw, _keys(HeartbeatConfig), f"{where}.heartbeat")
        hb = HeartbeatConfig()  # the defaults
        interval = _number(hb_raw, "intervalMilliseconds", hb.interval_milliseconds,
                           f"{where}.heartbeat", 50, 60_000)
        timeout = _number(hb_raw, "peerTimeoutMilliseconds", hb.peer_timeout_milliseconds,
                          f"{where}.heartbeat", 100, 600_000)
        if timeout < 2 * interval:
            raise ConfigError(f"{where}.heartbeat.peerTimeoutMilliseconds: must be at least "
                              f"twice intervalMilliseconds ({2 * interval}), got {timeout}")
        f_raw = _object(body.get("fencing", {}), f"{where}.fencing")
        check_keys(f_raw, _keys(FencingConfig), f"{where}.fencing")
        fd = FencingConfig()  # the defaults
        watchdog = f_raw.get("watchdog", fd.watchdog)
        if not isinstance(watchdog, bool):
            raise ConfigError(f"{where}.fencing.watchdog: must be true or false, "
                              f"got {watchdog!r}")
        fencing = FencingConfig(
            _number(f_raw, "selfFenceTimeoutSeconds", fd.self_fence_timeout_seconds,
                    f"{where}.fencing", 0, 3600),
            _number(f_raw, "operatorLeaseSeconds", fd.operator_lease_seconds,
                    f"{where}.fencing", 1, 3600),
            _number(f_raw, "offlineTimeoutSeconds", fd.offline_timeout_seconds,
                    f"{where}.fencing", 1, 3600),
            watchdog,
        )
        return cls(groups, tuple(peers), HeartbeatConfig(interval, timeout), fencing)


@dataclass(frozen=True)
class Command:
    """The envelope every mutating request carries."""

    epoch: int
    operation_id: str


def parse_command(body: Any, extra: frozenset[str] = frozenset()) -> tuple[Command, dict[str, Any]]:
    """Splits epoch and operationId off a request body; the rest is returned."""
    raw = _object(body, "body")
    epoch, op = raw.get("epoch"), raw.get("operationId")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ConfigError(f"body.epoch: required, an integer >= 0, got {epoch!r}")
    if not isinstance(op, str) or not 0 < len(op) <= MAX_OPERATION_ID or not op.isprintable():
        raise ConfigError(f"body.operationId: required, 1 to {MAX_OPERATION_ID} printable "
                          f"characters, got {op!r}"[:300])
    check_keys(raw, extra | {"epoch", "operationId"}, "body")
    rest = {k: v for k, v in raw.items() if k not in ("epoch", "operationId")}
    return Command(epoch, op), rest
