"""The agent's API as calls: what each request is, and how its answer reads, without I/O.

Both operator clients, the blocking guestha.channel.client and the asyncio
guestha.channel.aio_client, send these same calls and read their answers here, so the
paths, bodies, deadlines and the typing of answers (guestha.protocol's types) are written
once. `answer` turns what came back into the call's type: an answer with status >= 400 is
the agent's refusal (AgentRefusal: status, reason, message as its JSON error body has
them); one that breaks the contract (a missing field, a wrong type) is a ChannelError of
stage "protocol" naming the field. docs/agent-api.md is the reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from guestha.channel.framing import AgentResponse
from guestha.channel.transport import ChannelError, Member
from guestha.protocol.bundle import BundleInstalled, BundleUpload
from guestha.protocol.commands import GROUP_ACTIONS, ActionAccepted, Command, ConfigApplied
from guestha.protocol.desired import ConfigDocument, DesiredConfig
from guestha.protocol.events import EVENTS_GONE, EventBatch, EventsGone
from guestha.protocol.fields import FieldError
from guestha.protocol.status import Health, StatusReport
from guestha.protocol.tls import TlsApplied, TlsUpdate

LONG_POLL_MARGIN = 5.0  # seconds a long-poll may take beyond the wait it asked for
T = TypeVar("T")


def new_operation_id() -> str:
    return uuid.uuid4().hex


class AgentRefusal(Exception):
    """The agent answered, and refused: its status, reason word and message."""

    def __init__(
        self, member: Member, transport: str, method: str, path: str, response: AgentResponse
    ) -> None:
        body = response.body if isinstance(response.body, dict) else {}
        self.member = member
        self.transport = transport
        self.status = response.status
        self.reason = str(body.get("reason") or "")
        self.message = str(body.get("message") or response.body or "")
        self.response = response
        super().__init__(
            f"agent of {member} over {transport}: {method} {path} answered "
            f"{self.status} {self.reason}: {self.message}"
        )

    @property
    def gone(self) -> EventsGone | None:
        """For a 410 EventsGone of /v1/events: where the stream stands (else None)."""
        if self.status != 410 or self.reason != EVENTS_GONE:
            return None
        try:
            return EventsGone.from_dict(self.response.body)
        except FieldError:
            return None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of the agent's API and how to read its answer.

    `epoch`: the epoch a command carries in its body, sent in the epoch header too (None:
    the client's own epoch goes in the header). `least_timeout`: the call's deadline is at
    least this (a long-poll's wait plus a margin), else the client's."""

    method: str
    path: str
    parse: Callable[[AgentResponse], T]
    body: Any = None
    epoch: int | None = None
    least_timeout: float = 0.0

    def deadline(self, timeout: float) -> float:
        """Seconds this call may take, for a client whose deadline is `timeout`."""
        return max(timeout, self.least_timeout)


def answer(call: Call[T], response: AgentResponse, member: Member, transport: str) -> T:
    """The answer as the call's type: AgentRefusal for a refusal, ChannelError (stage
    "protocol") for an answer that breaks the contract."""
    if response.status >= 400:
        raise AgentRefusal(member, transport, call.method, call.path, response)
    try:
        return call.parse(response)
    except FieldError as exc:
        raise ChannelError(
            member, transport, "protocol",
            f"{call.method} {call.path}: the answer breaks the channel's contract: {exc}",
        ) from None


def status() -> Call[StatusReport]:
    """GET /v1/status: the agent's whole state."""
    return Call("GET", "/v1/status", lambda r: StatusReport.from_dict(r.body))


def healthz() -> Call[Health]:
    """GET /v1/healthz: the process answers (with the epoch header: the operator's
    keep-alive)."""
    return Call("GET", "/v1/healthz", lambda r: Health.from_dict(r.body))


def get_config() -> Call[ConfigDocument]:
    """GET /v1/config: the configuration last put, and its epoch."""
    return Call("GET", "/v1/config", lambda r: ConfigDocument.from_dict(r.body))


def put_config(
    epoch: int, config: DesiredConfig, operation_id: str | None = None
) -> Call[ConfigApplied]:
    """PUT /v1/config: the whole desired configuration (groups, peers, heartbeat,
    fencing), under the operator's epoch and an operation id (new unless given)."""
    command = Command(epoch, operation_id or new_operation_id())
    return Call("PUT", "/v1/config", lambda r: ConfigApplied.from_dict(r.body, r.replayed),
                {**config.to_dict(), **command.to_dict()}, epoch)


def put_bundle(
    epoch: int, upload: BundleUpload, operation_id: str | None = None
) -> Call[BundleInstalled]:
    """PUT /v1/bundle: a newer agent bundle, which the agent restarts into (its channel
    closes for the restart), under the operator's epoch and an operation id."""
    command = Command(epoch, operation_id or new_operation_id())
    return Call("PUT", "/v1/bundle", lambda r: BundleInstalled.from_dict(r.body, r.replayed),
                {**upload.to_dict(), **command.to_dict()}, epoch)
def put_tls(epoch: int, update: TlsUpdate, operation_id: str | None = None) -> Call[TlsApplied]:
    """PUT /v1/tls: the agent's new serving certificate and key (and CA): stored, and
    served to new connections from then on."""
    command = Command(epoch, operation_id or new_operation_id())
    return Call("PUT", "/v1/tls", lambda r: TlsApplied.from_dict(r.body, r.replayed),
                {**update.to_dict(), **command.to_dict()}, epoch)


def group_action(
    group: str, action: str, epoch: int, operation_id: str | None = None,
    reason: str | None = None,
) -> Call[ActionAccepted]:
    """POST /v1/groups/GROUP/ACTION (online, offline, clear, probe): queued on the
    group's worker; progress arrives as events."""
    if action not in GROUP_ACTIONS:
        raise ValueError(f"action: must be one of {', '.join(GROUP_ACTIONS)}, got {action!r}")
    body = Command(epoch, operation_id or new_operation_id()).to_dict()
    if reason:
        body["reason"] = reason
    path = f"/v1/groups/{quote(group, safe='')}/{action}"
    return Call("POST", path, lambda r: ActionAccepted.from_dict(r.body, r.replayed), body,
                epoch)


def events(
    after: int, wait_seconds: float = 0.0, stream: str | None = None, limit: int | None = None
) -> Call[EventBatch]:
    """GET /v1/events: the events after `after`, waiting up to `wait_seconds` for one. A
    410 (events gone, or another agent run) is an AgentRefusal whose `gone` says where the
    stream stands: read /v1/status and start again from its `events`."""
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds: must be >= 0, got {wait_seconds!r}")
    query: dict[str, Any] = {"after": after, "timeout": f"{wait_seconds:g}"}
    if stream:
        query["stream"] = stream
    if limit is not None:
        query["limit"] = limit
    return Call("GET", f"/v1/events?{urlencode(query)}", lambda r: EventBatch.from_dict(r.body),
                least_timeout=wait_seconds + LONG_POLL_MARGIN)
