"""The agent's events: their kinds, and the answers of GET /v1/events.

The operator learns of every change from these (docs/agent-api.md, "Events"), so a kind
is spelled once, here: the agent emits these names and the operator matches on them.
Events are ordered by `seq` (1, 2, 3, ... per agent run, the run being the `stream`).
A kind the reader does not know is still an event (a newer agent may add kinds); its
`data` is the emitter's payload, a JSON object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.protocol import TYPE_CHECKING, fields

if TYPE_CHECKING:
    from typing import Any

# From the agent itself.
AGENT_STARTED = "AgentStarted"  # member, agentVersion, incarnation, groups
AGENT_RESUMED = "AgentResumed"  # gapMilliseconds: the agent was paused
AGENT_STOPPING = "AgentStopping"  # offlineTimeoutSeconds
AGENT_STOPPED = "AgentStopped"  # failoverGroupsOffline, durationMilliseconds, watchdog
CONFIG_APPLIED = "ConfigApplied"  # groups, peers
CONFIG_REJECTED = "ConfigRejected"  # message: the stored configuration was not applied
EPOCH_CHANGED = "EpochChanged"  # epoch
COMMAND_APPLIED = "CommandApplied"  # group, action, operationId, epoch, reason
PEER_UP = "PeerUp"  # member
PEER_DOWN = "PeerDown"  # member, lastHeardMilliseconds (its age when sent; null: never)
QUORUM_GAINED = "QuorumGained"  # votes, present, reason
QUORUM_LOST = "QuorumLost"  # votes, present, reason
SELF_FENCING = "SelfFencing"  # reason, timeoutSeconds
SELF_FENCED = "SelfFenced"  # reason, durationMilliseconds
SELF_FENCE_FAILED = "SelfFenceFailed"  # reason, durationMilliseconds
SELF_FENCE_CLEARED = "SelfFenceCleared"  # reason
WATCHDOG_STOPPED = "WatchdogStopped"  # reason, device, armed
WATCHDOG_UNAVAILABLE = "WatchdogUnavailable"  # device, message
TLS_RELOADED = "TLSReloaded"
TLS_RELOAD_FAILED = "TLSReloadFailed"  # message
# From the group runner.
GROUP_STATE = "GroupState"  # group, state
RESOURCE_STATE = "ResourceState"  # group, resource, state, ...
RESOURCE_FAULTED = "ResourceFaulted"  # group, resource, ...
RESOURCE_RESTARTED = "ResourceRestarted"  # group, resource, ...
AGENT_ERROR = "AgentError"  # group, operation, ...: a group operation failed unexpectedly

EVENT_KINDS = (
    AGENT_STARTED, AGENT_RESUMED, AGENT_STOPPING, AGENT_STOPPED, CONFIG_APPLIED,
    CONFIG_REJECTED, EPOCH_CHANGED, COMMAND_APPLIED, PEER_UP, PEER_DOWN, QUORUM_GAINED,
    QUORUM_LOST, SELF_FENCING, SELF_FENCED, SELF_FENCE_FAILED, SELF_FENCE_CLEARED,
    WATCHDOG_STOPPED, WATCHDOG_UNAVAILABLE, TLS_RELOADED, TLS_RELOAD_FAILED,
    GROUP_STATE, RESOURCE_STATE, RESOURCE_FAULTED, RESOURCE_RESTARTED, AGENT_ERROR,
)

EVENTS_GONE = "EventsGone"  # the reason of a 410 answer (see EventsGone)


@dataclass(frozen=True)
class Event:
    """One event: its place in the stream, its kind, when (RFC 3339 UTC, for people:
    order comes from seq) and the emitter's payload."""

    seq: int
    kind: str
    time: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "time": self.time, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "event") -> Event:
        body = fields.obj(raw, where)
        return cls(fields.integer(body, "seq", None, where, 1),
                   fields.text(body, "kind", where), fields.text(body, "time", where),
                   dict(fields.obj(body.get("data"), f"{where}.data")))


@dataclass(frozen=True)
class EventBatch:
    """One answer of GET /v1/events: the events after the reader's `after` (at most its
    limit; `more` when others wait), and the newest sequence number of the stream."""

    stream: str
    last_seq: int
    more: bool
    events: tuple[Event, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "lastSeq": self.last_seq, "more": self.more,
                "events": [e.to_dict() for e in self.events]}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "events") -> EventBatch:
        body = fields.obj(raw, where)
        items = fields.array(body.get("events"), f"{where}.events")
        return cls(fields.text(body, "stream", where),
                   fields.integer(body, "lastSeq", None, where),
                   fields.boolean(body, "more", None, where),
                   tuple(Event.from_dict(e, f"{where}.events[{i}]")
                         for i, e in enumerate(items)))


@dataclass(frozen=True)
class EventsGone:
    """The body of a 410 EventsGone: the events asked for are no longer held, or the
    stream is another run of the agent. The reader reads /v1/status and starts again
    from its `events` (or, in the same stream, from `first_seq - 1`)."""

    message: str
    stream: str
    first_seq: int
    last_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"status": 410, "reason": EVENTS_GONE, "message": self.message,
                "stream": self.stream, "firstSeq": self.first_seq, "lastSeq": self.last_seq}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "body") -> EventsGone:
        body = fields.obj(raw, where)
        return cls(fields.text(body, "message", where, ""), fields.text(body, "stream", where),
                   fields.integer(body, "firstSeq", None, where),
                   fields.integer(body, "lastSeq", None, where))
