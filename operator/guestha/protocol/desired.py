"""The desired configuration the operator puts to an agent (PUT /v1/config), with its
defaults and its strict parser.

Everything the operator decides for one member: its groups (guestha.protocol.config), its
peers with their pair keys, the heartbeat timing and how it fences itself. The defaults
here are the only copy; the InGuestCluster CRD's spec.heartbeat and spec.fencing defaults
must equal them (tests/unit/test_crd_schema.py). Unknown fields, wrong types and bad
values are refused with a message naming the field.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.protocol import TYPE_CHECKING, addresses, fields
from guestha.protocol.config import GroupConfig
from guestha.protocol.keys import MIN_PAIR_KEY_BYTES

if TYPE_CHECKING:
    from typing import Any

DESIRED_FIELDS = frozenset({"groups", "peers", "heartbeat", "fencing"})


def _read(cls: Any, raw: Any, where: str) -> Any:
    """A dataclass of integer and boolean fields, each within `cls.BOUNDS` (integers) and
    its default when absent; unknown fields refused."""
    body = fields.obj(raw, where)
    fields.check_keys(body, fields.json_keys(cls), where)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = fields.camel(f.name)
        if f.type == "bool":
            values[f.name] = fields.boolean(body, key, fields.default(cls, f.name), where)
        else:
            low, high = cls.BOUNDS[f.name]
            values[f.name] = fields.integer(body, key, fields.default(cls, f.name), where, low,
                                            high)
    return cls(**values)


@dataclass(frozen=True)
class HeartbeatConfig:
    """InGuestCluster spec.heartbeat."""

    interval_milliseconds: int = 500
    peer_timeout_milliseconds: int = 3000

    BOUNDS = {"interval_milliseconds": (50, 60_000),
              "peer_timeout_milliseconds": (100, 600_000)}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "heartbeat") -> HeartbeatConfig:
        hb: HeartbeatConfig = _read(cls, raw, where)
        if hb.peer_timeout_milliseconds < 2 * hb.interval_milliseconds:
            raise fields.FieldError(
                f"{where}.peerTimeoutMilliseconds: must be at least twice "
                f"intervalMilliseconds ({2 * hb.interval_milliseconds}), got "
                f"{hb.peer_timeout_milliseconds}")
        return hb

    def to_dict(self) -> dict[str, Any]:
        return {"intervalMilliseconds": self.interval_milliseconds,
                "peerTimeoutMilliseconds": self.peer_timeout_milliseconds}


@dataclass(frozen=True)
class FencingConfig:
    """How a member fences itself (from InGuestCluster spec.fencing, and the operator's
    own lease)."""

    self_fence_timeout_seconds: int = 10  # 0: never self-fence
    operator_lease_seconds: int = 15  # how long one contact keeps the operator's vote
    offline_timeout_seconds: int = 60  # how long taking the Failover groups offline may take
    # spec.fencing.watchdog: fencing relies on the guest's watchdog, so a Failover group
    # may only go online where it is armed.
    watchdog: bool = True

    BOUNDS = {"self_fence_timeout_seconds": (0, 3600), "operator_lease_seconds": (1, 3600),
              "offline_timeout_seconds": (1, 3600)}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "fencing") -> FencingConfig:
        fencing: FencingConfig = _read(cls, raw, where)
        return fencing

    def to_dict(self) -> dict[str, Any]:
        return {"selfFenceTimeoutSeconds": self.self_fence_timeout_seconds,
                "operatorLeaseSeconds": self.operator_lease_seconds,
                "offlineTimeoutSeconds": self.offline_timeout_seconds,
                "watchdog": self.watchdog}


@dataclass(frozen=True)
class PeerConfig:
    """Another member, as heartbeats reach it."""

    member: str
    # An IP address (the agent never resolves names in its loop); None: not known yet (its
    # VM has not run): the member still counts as a vote, but nothing is sent to it and
    # no datagram counts as its.
    address: str | None
    port: int | None = None  # None: the agent's own heartbeatPort (default HEARTBEAT_PORT)
    # The pair key of this member and the peer (heartbeatKey, base64; guestha.protocol.keys);
    # None: the identity file's cluster key, until the operator gives pair keys.
    heartbeat_key: bytes | None = field(default=None, repr=False)
    # More keys this peer's datagrams are accepted under (acceptKeys, base64): the other
    # pair key while the cluster's heartbeat secret is rotated (an overlap: agents accept
    # the old and the new, send with the new once every peer accepts it). Sent with the
    # heartbeatKey only.
    accept_keys: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def from_dict(cls, raw: Any, where: str, index: int = 0) -> PeerConfig:
        """Entry `index` of the list `where`; messages name it `where[member]`."""
        body = fields.obj(raw, f"{where}[{index}]")
        member = body.get("member")
        if not isinstance(member, str) or not member:
            raise fields.FieldError(f"{where}[{index}].member: required, a non-empty string")
        label = f"{where}[{member}]"
        fields.check_keys(body, frozenset({"member", "address", "port", "heartbeatKey",
                                           "acceptKeys"}), label)
        address = body.get("address")
        if address is not None and addresses.packed(address) is None:
            raise fields.FieldError(f"{label}.address: must be an IP address, got {address!r}")
        port = fields.integer(body, "port", 1, label, 1, 65535) if "port" in body else None
        key = _heartbeat_key(body, label)
        accept = tuple(_key(k, f"{label}.acceptKeys[{i}]") for i, k in enumerate(
            fields.array(body.get("acceptKeys", []), f"{label}.acceptKeys")))
        if accept and key is None:
            raise fields.FieldError(f"{label}.acceptKeys: only with a heartbeatKey")
        if len(accept) > MAX_ACCEPT_KEYS:
            raise fields.FieldError(f"{label}.acceptKeys: at most {MAX_ACCEPT_KEYS}, got "
                                    f"{len(accept)}")
        return cls(member, None if address is None else str(address), port, key, accept)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"member": self.member}
        if self.address is not None:
            out["address"] = self.address
        if self.port is not None:
            out["port"] = self.port
        if self.heartbeat_key is not None:
            out["heartbeatKey"] = base64.b64encode(self.heartbeat_key).decode("ascii")
        if self.accept_keys:
            out["acceptKeys"] = [base64.b64encode(k).decode("ascii") for k in self.accept_keys]
        return out


MAX_ACCEPT_KEYS = 2


def _key(raw: Any, where: str) -> bytes:
    try:
        key = base64.b64decode(raw if isinstance(raw, str) else "", validate=True)
    except ValueError:
        key = b""
    if len(key) < MIN_PAIR_KEY_BYTES:
        raise fields.FieldError(f"{where}: must be base64 of at least {MIN_PAIR_KEY_BYTES} "
                                f"bytes (a pair key of this member and the peer)")
    return key


def _heartbeat_key(p: Mapping[str, Any], where: str) -> bytes | None:
    if "heartbeatKey" not in p:
        return None
    return _key(p["heartbeatKey"], f"{where}.heartbeatKey")


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
        """The configuration of `member` (which may be listed among the peers: it is not
        its own peer, and is left out)."""
        body = fields.obj(raw, where)
        fields.check_keys(body, DESIRED_FIELDS, where)
        items = fields.array(body.get("groups", []), f"{where}.groups")
        groups = tuple(GroupConfig.from_dict(g, f"{where}.groups" if isinstance(g, dict)
                                             else f"{where}.groups[{i}]")
                       for i, g in enumerate(items))
        names = [g.name for g in groups]
        for name in names:
            if names.count(name) > 1:
                raise fields.FieldError(f"{where}.groups[{name}]: duplicate group name")
        listed = [PeerConfig.from_dict(p, f"{where}.peers", i)
                  for i, p in enumerate(fields.array(body.get("peers", []), f"{where}.peers"))]
        peers = tuple(p for p in listed if p.member != member)
        members = [p.member for p in peers]
        for name in members:
            if members.count(name) > 1:
                raise fields.FieldError(f"{where}.peers[{name}]: duplicate member")
        keyed = [p.member for p in peers if p.heartbeat_key is not None]
        if keyed and len(keyed) < len(peers):
            missing = next(p.member for p in peers if p.heartbeat_key is None)
            raise fields.FieldError(
                f"{where}.peers[{missing}].heartbeatKey: required, as other peers have one "
                f"(pair keys replace the cluster key for every peer at once)")
        return cls(groups, peers,
                   HeartbeatConfig.from_dict(body.get("heartbeat", {}), f"{where}.heartbeat"),
                   FencingConfig.from_dict(body.get("fencing", {}), f"{where}.fencing"))

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups],
                "peers": [p.to_dict() for p in self.peers],
                "heartbeat": self.heartbeat.to_dict(), "fencing": self.fencing.to_dict()}


@dataclass(frozen=True)
class ConfigDocument:
    """GET /v1/config: the configuration last put, and the epoch it was put under."""

    epoch: int
    config: DesiredConfig | None  # None: none was put, or the stored one was refused
    error: str | None  # why the stored configuration was not applied at start-up

    @classmethod
    def from_dict(cls, raw: Any, where: str = "body") -> ConfigDocument:
        """The agent sends the configuration as it was put. One it refused itself at
        start-up (`error` set) is not in force, and reads as None."""
        body = fields.obj(raw, where)
        error = fields.optional_text(body, "error", where)
        stored = body.get("config")
        config = (None if stored is None or error is not None
                  else DesiredConfig.from_dict(stored, where=f"{where}.config"))
        return cls(fields.integer(body, "epoch", None, where), config, error)
