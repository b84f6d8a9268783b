"""The operator's blocking client of one member's agent: HTTP/1.1 keep-alive JSON over a
transport.

One `AgentClient` is one connection (not shared between threads): the operator keeps one
per member for status and commands and another for the events long-poll (docs/agent-api.md).
The connection is opened on first use and kept; when the agent closed a kept-alive
connection (its 60 s idle limit), the request is sent once more on a new one: safe for
commands too, because every command carries an operation id the agent applies once.
Every request has a deadline; a timeout, a refused handshake or a broken answer raises a
ChannelError naming the member and the transport, and the connection is dropped. An
answer of the agent's own with status >= 400 raises AgentRefusal (status, reason, message,
as the agent's JSON error body has them), except from `request`, which returns any answer.
The API's methods return guestha.protocol's typed answers; an answer that breaks the
contract (a missing field, a wrong type) raises ChannelError with stage "protocol", naming
the field. The requests, their framing and the typing of answers are shared with the
asyncio client (guestha.channel.framing, guestha.channel.calls); this module only moves
the bytes.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any, TypeVar

from guestha.channel import calls
from guestha.channel.calls import LONG_POLL_MARGIN, AgentRefusal, Call, new_operation_id
from guestha.channel.framing import (
    MAX_BODY,
    MAX_HEAD,
    AgentResponse,
    AnswerReader,
    Closed,
    FramingError,
    request_bytes,
)
from guestha.channel.transport import ChannelError, Member, Stream, Transport
from guestha.protocol.bundle import BundleInstalled, BundleUpload
from guestha.protocol.commands import ActionAccepted, ConfigApplied
from guestha.protocol.constants import EPOCH_HEADER
from guestha.protocol.desired import ConfigDocument, DesiredConfig
from guestha.protocol.events import EventBatch
from guestha.protocol.status import Health, StatusReport
from guestha.protocol.tls import TlsApplied, TlsUpdate

__all__ = [
    "LONG_POLL_MARGIN", "MAX_BODY", "MAX_HEAD", "AgentClient", "AgentRefusal",
    "AgentResponse", "new_operation_id",
]
T = TypeVar("T")


class AgentClient:
    """HTTP/1.1 with JSON to one member's agent over `transport` (Network or VSOCK)."""

    def __init__(
        self,
        member: Member,
        transport: Transport,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        epoch: int | None = None,
    ) -> None:
        self.member = member
        self.transport = transport
        # The operator's epoch, sent as Guestha-Epoch on every request: a request counts as
        # the operator's quorum vote at the agent only with it (docs/agent-api.md).
        self.epoch = epoch
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self._stream: Stream | None = None
        self._reader = AnswerReader()
        self._fresh = False  # the open connection has carried no request yet

    # -- connection

    def _error(self, stage: str, message: str) -> ChannelError:
        return ChannelError(self.member, self.transport.name, stage, message)

    @property
    def connected(self) -> bool:
        return self._stream is not None

    def connect(self) -> None:
        """Opens the connection now (else the first request does)."""
        if self._stream is None:
            self._stream = self.transport.dial(self.member, self.connect_timeout)
            self._reader.clear()
            self._fresh = True

    def close(self) -> None:
        stream, self._stream = self._stream, None
        self._reader.clear()
        if stream is not None:
            with contextlib.suppress(OSError, ssl.SSLError):
                stream.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        epoch: int | None = None,
    ) -> AgentResponse:
        """One request and its answer, whatever its status; it carries `epoch` (else the
        client's) as the operator's epoch."""
        wait = self.timeout if timeout is None else timeout
        epoch = self.epoch if epoch is None else epoch
        message = request_bytes(method, path, self.member.name, body,
                                None if epoch is None else (EPOCH_HEADER, epoch))
        for attempt in (1, 2):
            reused = self._stream is not None and not self._fresh
            self.connect()
            deadline = time.monotonic() + wait
            try:
                return self._exchange(message, deadline)
            except Closed as closed:
                self.close()
                if attempt == 1 and reused and closed.early:
                    continue  # the agent closed an idle kept-alive connection: once more
                raise self._error(
                    "closed", f"{method} {path}: the agent closed the connection before answering"
                ) from None
            except TimeoutError:
                self.close()
                raise self._error(
                    "timeout", f"{method} {path}: no answer within {wait:g} s"
                ) from None
            except FramingError as exc:
                self.close()
                raise self._error("http", str(exc)) from None
            except ssl.SSLError as exc:
                self.close()
                raise self._error(
                    "tls",
                    f"{method} {path}: TLS failed (the agent refused "
                    f"the operator's certificate?): {exc}",
                ) from None
            except ChannelError:
                self.close()
                raise
            except OSError as exc:
                self.close()
                if (
                    attempt == 1
                    and reused
                    and isinstance(exc, (BrokenPipeError, ConnectionResetError))
                ):
                    continue
                raise self._error("closed", f"{method} {path}: {exc}") from None
        raise AssertionError("unreachable")

    def _exchange(self, message: bytes, deadline: float) -> AgentResponse:
        stream = self._stream
        assert stream is not None
        self._fresh = False
        stream.settimeout(max(0.001, deadline - time.monotonic()))
        stream.sendall(message)
        while (response := self._reader.next()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            stream.settimeout(left)
            chunk = stream.recv(65536)
            if not chunk:
                raise Closed(early=not self._reader.started)
            self._reader.feed(chunk)
        if response.closes:
            self.close()
        return response

    # -- the agent's API (docs/agent-api.md)

    def call(self, call: Call[T]) -> T:
        """One call of guestha.channel.calls, its answer typed."""
        response = self.request(call.method, call.path, call.body,
                                call.deadline(self.timeout), call.epoch)
        return calls.answer(call, response, self.member, self.transport.name)

    def status(self) -> StatusReport:
        """GET /v1/status: the agent's whole state."""
        return self.call(calls.status())

    def healthz(self) -> Health:
        return self.call(calls.healthz())

    def get_config(self) -> ConfigDocument:
        """GET /v1/config: the configuration last put, and its epoch."""
        return self.call(calls.get_config())

    def put_config(
        self, epoch: int, config: DesiredConfig, operation_id: str | None = None
    ) -> ConfigApplied:
        """PUT /v1/config: the whole desired configuration (groups, peers, heartbeat,
        fencing), under the operator's epoch and an operation id (new unless given)."""
        return self.call(calls.put_config(epoch, config, operation_id))

    def put_bundle(
        self, epoch: int, upload: BundleUpload, operation_id: str | None = None
    ) -> BundleInstalled:
        """PUT /v1/bundle: the agent checks the bundle, answers, and restarts into it."""
        return self.call(calls.put_bundle(epoch, upload, operation_id))
    def put_tls(self, epoch: int, update: TlsUpdate,
                operation_id: str | None = None) -> TlsApplied:
        """PUT /v1/tls: a new serving certificate for the agent (and CA), under the
        operator's epoch; new connections get it."""
        return self.call(calls.put_tls(epoch, update, operation_id))

    def group_action(
        self,
        group: str,
        action: str,
        epoch: int,
        operation_id: str | None = None,
        reason: str | None = None,
    ) -> ActionAccepted:
        """POST /v1/groups/GROUP/ACTION (online, offline, clear, probe): queued on the
        group's worker; progress arrives as events."""
        return self.call(calls.group_action(group, action, epoch, operation_id, reason))

    def events(
        self,
        after: int,
        wait_seconds: float = 0.0,
        stream: str | None = None,
        limit: int | None = None,
    ) -> EventBatch:
        """GET /v1/events: the events after `after`, waiting up to `wait_seconds` for one.
        A 410 (events gone, or another agent run) raises AgentRefusal (its `gone` says
        where the stream stands): read /v1/status and start again from its `events`."""
        return self.call(calls.events(after, wait_seconds, stream, limit))
