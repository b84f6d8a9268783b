"""The agent's status report (GET /v1/status) and health (GET /v1/healthz), typed.

The agent builds its report from these classes and sends `to_dict()`; the operator reads
it with `from_dict`, which refuses a malformed report naming the field
("status.quorum.votes: required, an integer"), so a broken agent is a clear error at the
operator, never a KeyError deep in a reconcile. Fields the reader does not know are
ignored (a newer agent may add some); a field it knows must be there with its type.
docs/agent-api.md explains each field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.protocol import TYPE_CHECKING, fields
from guestha.protocol.bundle import BundleStatus
from guestha.protocol.config import GROUP_TYPES, RESOURCE_TYPES
from guestha.protocol.keys import KEY_SOURCES
from guestha.protocol.states import GROUP_STATES, PEER_STATES, RESOURCE_STATES, SELF_FENCE_STATES
from guestha.protocol.tls import TlsStatus

if TYPE_CHECKING:
    from typing import Any

_o, _int, _text, _bool = fields.obj, fields.integer, fields.text, fields.boolean


@dataclass(frozen=True)
class ResourceStatus:
    """One resource as its monitor last saw it."""

    name: str
    type: str
    state: str
    critical: bool
    restarts: int  # restarts in place since the last fault or clear
    monitor_timeouts: int  # monitors in a row that timed out
    message: str  # the last monitor's or action's words
    last_change: str  # RFC 3339: when the state last changed
    pending_change: bool  # a new configuration waits for the next online

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "state": self.state,
                "critical": self.critical, "restarts": self.restarts,
                "monitorTimeouts": self.monitor_timeouts, "message": self.message,
                "lastChange": self.last_change, "pendingChange": self.pending_change}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ResourceStatus:
        b = _o(raw, where)
        return cls(_text(b, "name", where), _text(b, "type", where, choices=RESOURCE_TYPES),
                   _text(b, "state", where, choices=RESOURCE_STATES),
                   _bool(b, "critical", None, where), _int(b, "restarts", None, where),
                   _int(b, "monitorTimeouts", None, where), _text(b, "message", where, ""),
                   _text(b, "lastChange", where), _bool(b, "pendingChange", None, where))


@dataclass(frozen=True)
class GroupStatus:
    """One group on this member (guestha.protocol.states.group_state decides `state`)."""

    state: str
    type: str
    resources: tuple[ResourceStatus, ...] = ()
    removing: bool = False  # taken out of the configuration, being stopped

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "type": self.type}
        if self.removing:
            out["removing"] = True
        out["resources"] = [r.to_dict() for r in self.resources]
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> GroupStatus:
        b = _o(raw, where)
        items = fields.array(b.get("resources"), f"{where}.resources")
        return cls(_text(b, "state", where, choices=GROUP_STATES),
                   _text(b, "type", where, choices=GROUP_TYPES),
                   tuple(ResourceStatus.from_dict(r, f"{where}.resources[{i}]")
                         for i, r in enumerate(items)),
                   _bool(b, "removing", False, where))


@dataclass(frozen=True)
class PeerStatus:
    """One peer as this agent's heartbeats see it, with the peer's own view."""

    member: str
    address: str | None  # None: not known yet (guestha.protocol.desired.PeerConfig)
    port: int
    state: str  # states.PEER_UP (counted for quorum), PEER_DOWN, PEER_UNKNOWN
    last_heard_milliseconds: int | None
    hears_us: bool
    incarnation: int
    seq: int
    view: Mapping[str, Any] = field(default_factory=dict)  # what the peer's heartbeats say

    def to_dict(self) -> dict[str, Any]:
        return {"member": self.member, "address": self.address, "port": self.port,
                "state": self.state, "lastHeardMilliseconds": self.last_heard_milliseconds,
                "hearsUs": self.hears_us, "incarnation": self.incarnation, "seq": self.seq,
                "view": dict(self.view)}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> PeerStatus:
        b = _o(raw, where)
        return cls(_text(b, "member", where), fields.optional_text(b, "address", where),
                   _int(b, "port", None, where, 1, 65535),
                   _text(b, "state", where, choices=PEER_STATES),
                   fields.optional_integer(b, "lastHeardMilliseconds", where),
                   _bool(b, "hearsUs", None, where), _int(b, "incarnation", None, where),
                   _int(b, "seq", None, where), dict(_o(b.get("view"), f"{where}.view")))


@dataclass(frozen=True)
class QuorumStatus:
    """Votes = members + the operator's one; quorum = a strict majority present."""

    votes: int
    present: int
    operator_in_contact: bool
    operator_last_contact_milliseconds: int | None
    has_quorum: bool
    since: str  # RFC 3339: when has_quorum last changed
    last_held: str  # RFC 3339: the last moment quorum was held (the self-fence bound)
    members: tuple[str, ...] = ()
    alive_peers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"votes": self.votes, "present": self.present,
                "operatorInContact": self.operator_in_contact,
                "operatorLastContactMilliseconds": self.operator_last_contact_milliseconds,
                "hasQuorum": self.has_quorum, "since": self.since, "lastHeld": self.last_held,
                "members": list(self.members), "alivePeers": list(self.alive_peers)}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> QuorumStatus:
        b = _o(raw, where)
        return cls(_int(b, "votes", None, where, 1), _int(b, "present", None, where),
                   _bool(b, "operatorInContact", None, where),
                   fields.optional_integer(b, "operatorLastContactMilliseconds", where),
                   _bool(b, "hasQuorum", None, where), _text(b, "since", where),
                   _text(b, "lastHeld", where), fields.texts(b, "members", where),
                   fields.texts(b, "alivePeers", where))


@dataclass(frozen=True)
class SelfFenceStatus:
    """The self-fencing decision (guestha.agent.quorum)."""

    state: str  # one of states.SELF_FENCE_STATES
    reason: str
    since: str  # RFC 3339
    seconds_left: float | None  # until self-fencing starts; None: it is not coming
    timeout_seconds: float  # selfFenceTimeoutSeconds (0: never)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "since": self.since,
                "secondsLeft": self.seconds_left, "timeoutSeconds": self.timeout_seconds}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> SelfFenceStatus:
        b = _o(raw, where)
        return cls(_text(b, "state", where, choices=SELF_FENCE_STATES),
                   _text(b, "reason", where, ""), _text(b, "since", where),
                   fields.optional_number(b, "secondsLeft", where),
                   fields.number(b, "timeoutSeconds", where))


@dataclass(frozen=True)
class WatchdogStatus:
    """The guest watchdog as this run of the agent holds it."""

    device: str | None
    armed: bool  # this run holds the device open
    pets: int
    petting: bool  # armed, and petting has not stopped
    stopped_reason: str | None  # why petting stopped (for the rest of the boot)
    error: str | None  # why the device could not be opened
    hang_seconds: float  # the main loop's stall that stops petting

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "armed": self.armed, "pets": self.pets,
                "petting": self.petting, "stoppedReason": self.stopped_reason,
                "error": self.error, "hangSeconds": self.hang_seconds}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> WatchdogStatus:
        b = _o(raw, where)
        return cls(fields.optional_text(b, "device", where), _bool(b, "armed", None, where),
                   _int(b, "pets", None, where), _bool(b, "petting", None, where),
                   fields.optional_text(b, "stoppedReason", where),
                   fields.optional_text(b, "error", where),
                   fields.number(b, "hangSeconds", where))


@dataclass(frozen=True)
class EventCursor:
    """Where the event stream stands: a reader continues from here (/v1/events)."""

    stream: str  # this run of the agent
    last_seq: int  # the newest event's sequence number (0: none yet)

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "lastSeq": self.last_seq}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> EventCursor:
        b = _o(raw, where)
        return cls(_text(b, "stream", where), _int(b, "lastSeq", None, where))


@dataclass(frozen=True)
class HeartbeatStatus:
    """The heartbeat timing in force, which keys sign them, and the datagram counters."""

    interval_milliseconds: int
    peer_timeout_milliseconds: int
    keys: str  # keys.PAIR_KEYS once the operator gave pair keys, else keys.CLUSTER_KEY
    counters: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"intervalMilliseconds": self.interval_milliseconds,
                "peerTimeoutMilliseconds": self.peer_timeout_milliseconds,
                "keys": self.keys, "counters": dict(self.counters)}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> HeartbeatStatus:
        b = _o(raw, where)
        return cls(_int(b, "intervalMilliseconds", None, where, 1),
                   _int(b, "peerTimeoutMilliseconds", None, where, 1),
                   _text(b, "keys", where, choices=KEY_SOURCES),
                   fields.counters(b, "counters", where))


@dataclass(frozen=True)
class StatusReport:
    """GET /v1/status: the agent's whole state."""

    cluster: str
    member: str
    agent_version: str  # the content hash of the agent's sources
    incarnation: int  # grows with every start of the agent
    hostname: str
    uptime_seconds: float
    epoch: int  # the newest operator epoch this agent has recorded
    config_error: str | None  # the stored configuration could not be applied at start
    groups: Mapping[str, GroupStatus]
    groups_error: str | None  # the groups could not be read (an agent bug): groups is empty
    peers: tuple[PeerStatus, ...]
    quorum: QuorumStatus
    self_fence: SelfFenceStatus
    watchdog: WatchdogStatus
    events: EventCursor
    heartbeat: HeartbeatStatus
    channel: Mapping[str, int]  # the channel server's counters
    # Where the agent runs from and its last rolled-back upgrade (protocol.bundle). None:
    # an agent older than PUT /v1/bundle, which does not say (a reader must take that).
    bundle: BundleStatus | None = None
    # The serving certificate new connections get (None: an agent before rotation, or
    # its certificate could not be read).
    tls: TlsStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster, "member": self.member,
            "agentVersion": self.agent_version, "incarnation": self.incarnation,
            "hostname": self.hostname, "uptimeSeconds": self.uptime_seconds,
            "epoch": self.epoch, "configError": self.config_error,
            "groups": {name: g.to_dict() for name, g in self.groups.items()},
            "groupsError": self.groups_error,
            "peers": [p.to_dict() for p in self.peers],
            "quorum": self.quorum.to_dict(), "selfFence": self.self_fence.to_dict(),
            "watchdog": self.watchdog.to_dict(), "events": self.events.to_dict(),
            "heartbeat": self.heartbeat.to_dict(), "channel": dict(self.channel),
            **({} if self.bundle is None else {"bundle": self.bundle.to_dict()}),
            "tls": None if self.tls is None else self.tls.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "status") -> StatusReport:
        b = _o(raw, where)
        groups = _o(b.get("groups"), f"{where}.groups")
        peers = fields.array(b.get("peers"), f"{where}.peers")
        return cls(
            _text(b, "cluster", where), _text(b, "member", where),
            _text(b, "agentVersion", where), _int(b, "incarnation", None, where),
            _text(b, "hostname", where, ""), fields.number(b, "uptimeSeconds", where),
            _int(b, "epoch", None, where), fields.optional_text(b, "configError", where),
            {name: GroupStatus.from_dict(g, f"{where}.groups[{name}]")
             for name, g in groups.items()},
            fields.optional_text(b, "groupsError", where),
            tuple(PeerStatus.from_dict(p, f"{where}.peers[{i}]") for i, p in enumerate(peers)),
            QuorumStatus.from_dict(b.get("quorum"), f"{where}.quorum"),
            SelfFenceStatus.from_dict(b.get("selfFence"), f"{where}.selfFence"),
            WatchdogStatus.from_dict(b.get("watchdog"), f"{where}.watchdog"),
            EventCursor.from_dict(b.get("events"), f"{where}.events"),
            HeartbeatStatus.from_dict(b.get("heartbeat"), f"{where}.heartbeat"),
            fields.counters(b, "channel", where),
            None if b.get("bundle") is None else BundleStatus.from_dict(b["bundle"],
                                                                        f"{where}.bundle"),
            None if b.get("tls") is None else TlsStatus.from_dict(b["tls"], f"{where}.tls"),
        )

    def group(self, name: str) -> GroupStatus | None:
        return self.groups.get(name)


@dataclass(frozen=True)
class Health:
    """GET /v1/healthz: the process answers (with the epoch header: the operator's
    keep-alive)."""

    member: str
    agent_version: str
    self_fence: str  # one of states.SELF_FENCE_STATES
    watchdog_petting: bool

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ok", "member": self.member, "agentVersion": self.agent_version,
                "selfFence": self.self_fence, "watchdogPetting": self.watchdog_petting}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "health") -> Health:
        b = _o(raw, where)
        _text(b, "status", where, choices=("ok",))
        return cls(_text(b, "member", where), _text(b, "agentVersion", where),
                   _text(b, "selfFence", where, choices=SELF_FENCE_STATES),
                   _bool(b, "watchdogPetting", None, where))
