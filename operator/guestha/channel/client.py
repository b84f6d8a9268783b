"""The operator's client of one member's agent: HTTP/1.1 keep-alive JSON over a transport.

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
the field.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from guestha.channel.transport import ChannelError, Member, Stream, Transport
from guestha.protocol.commands import GROUP_ACTIONS, ActionAccepted, Command, ConfigApplied
from guestha.protocol.constants import EPOCH_HEADER, REPLAYED_HEADER
from guestha.protocol.desired import ConfigDocument, DesiredConfig
from guestha.protocol.events import EVENTS_GONE, EventBatch, EventsGone
from guestha.protocol.fields import FieldError
from guestha.protocol.status import Health, StatusReport

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
LONG_POLL_MARGIN = 5.0  # seconds a long-poll may take beyond the wait it asked for
T = TypeVar("T")


def new_operation_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AgentResponse:
    """One answer of the agent: status, decoded JSON body, headers (lower-case names)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def replayed(self) -> bool:
        """The agent had applied this operation id already and answered from its record."""
        return self.headers.get(REPLAYED_HEADER.lower()) == "true"

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) else None


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


class _Closed(Exception):
    """The agent closed the connection; `early`: before a byte of the answer."""

    def __init__(self, early: bool) -> None:
        super().__init__("closed")
        self.early = early


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
        self._buffer = bytearray()
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
            self._buffer.clear()
            self._fresh = True

    def close(self) -> None:
        stream, self._stream = self._stream, None
        self._buffer.clear()
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
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.member.name}",
            "Accept: application/json",
            "Connection: keep-alive",
            f"Content-Length: {len(data)}",
        ]
        if body is not None:
            head.append("Content-Type: application/json")
        if epoch is not None:
            head.append(f"{EPOCH_HEADER}: {epoch}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        for attempt in (1, 2):
            reused = self._stream is not None and not self._fresh
            self.connect()
            deadline = time.monotonic() + wait
            try:
                return self._exchange(message, deadline)
            except _Closed as closed:
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
        status, headers = self._read_head(deadline)
        length_text = headers.get("content-length")
        if headers.get("transfer-encoding"):
            raise self._error(
                "http", "the agent sent Transfer-Encoding; it answers with Content-Length only"
            )
        if length_text is None or not length_text.isdigit():
            raise self._error("http", f"answer without a valid Content-Length ({length_text!r})")
        length = int(length_text)
        if length > MAX_BODY:
            raise self._error("http", f"answer body of {length} bytes is over {MAX_BODY}")
        raw = self._read_exact(length, deadline)
        if headers.get("connection", "").lower() == "close":
            self.close()
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            raise self._error("http", f"answer is not JSON: {exc}") from None
        return AgentResponse(status, body, headers)

    def _recv(self, deadline: float) -> bytes:
        stream = self._stream
        assert stream is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        stream.settimeout(left)
        return stream.recv(65536)

    def _read_head(self, deadline: float) -> tuple[int, dict[str, str]]:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > MAX_HEAD:
                raise self._error("http", f"answer head over {MAX_HEAD} bytes")
            chunk = self._recv(deadline)
            if not chunk:
                raise _Closed(early=not self._buffer)
            self._buffer += chunk
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise self._error("http", f"not an HTTP/1.1 status line: {lines[0][:100]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise self._error("http", f"bad header line {line[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            chunk = self._recv(deadline)
            if not chunk:
                raise _Closed(early=False)
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    # -- the agent's API (docs/agent-api.md)

    def _checked(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        epoch: int | None = None,
    ) -> AgentResponse:
        response = self.request(method, path, body, timeout, epoch)
        if response.status >= 400:
            raise AgentRefusal(self.member, self.transport.name, method, path, response)
        return response

    def _typed(self, method: str, path: str, parse: Callable[[AgentResponse], T],
               response: AgentResponse) -> T:
        """The answer read into its protocol type; a malformed one is a ChannelError."""
        try:
            return parse(response)
        except FieldError as exc:
            raise self._error(
                "protocol", f"{method} {path}: the answer breaks the channel's contract: {exc}"
            ) from None

    def _get(self, path: str, parse: Callable[[Any], T]) -> T:
        return self._typed("GET", path, lambda r: parse(r.body), self._checked("GET", path))

    def status(self) -> StatusReport:
        """GET /v1/status: the agent's whole state."""
        return self._get("/v1/status", StatusReport.from_dict)

    def healthz(self) -> Health:
        return self._get("/v1/healthz", Health.from_dict)

    def get_config(self) -> ConfigDocument:
        """GET /v1/config: the configuration last put, and its epoch."""
        return self._get("/v1/config", ConfigDocument.from_dict)

    def put_config(
        self, epoch: int, config: DesiredConfig, operation_id: str | None = None
    ) -> ConfigApplied:
        """PUT /v1/config: the whole desired configuration (groups, peers, heartbeat,
        fencing), under the operator's epoch and an operation id (new unless given)."""
        command = Command(epoch, operation_id or new_operation_id())
        body = {**config.to_dict(), **command.to_dict()}
        response = self._checked("PUT", "/v1/config", body, epoch=epoch)
        return self._typed("PUT", "/v1/config",
                           lambda r: ConfigApplied.from_dict(r.body, r.replayed), response)

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
        if action not in GROUP_ACTIONS:
            raise ValueError(f"action: must be one of {', '.join(GROUP_ACTIONS)}, got {action!r}")
        body = Command(epoch, operation_id or new_operation_id()).to_dict()
        if reason:
            body["reason"] = reason
        path = f"/v1/groups/{quote(group, safe='')}/{action}"
        response = self._checked("POST", path, body, epoch=epoch)
        return self._typed("POST", path,
                           lambda r: ActionAccepted.from_dict(r.body, r.replayed), response)

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
        query: dict[str, Any] = {"after": after, "timeout": f"{wait_seconds:g}"}
        if stream:
            query["stream"] = stream
        if limit is not None:
            query["limit"] = limit
        path = f"/v1/events?{urlencode(query)}"
        response = self._checked(
            "GET", path, timeout=max(self.timeout, wait_seconds + LONG_POLL_MARGIN)
        )
        return self._typed("GET", path, lambda r: EventBatch.from_dict(r.body), response)
