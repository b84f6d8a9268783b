"""HTTP/1.1 as the operator's clients speak it to an agent, without any I/O.

The blocking client (guestha.channel.client) and the asyncio one (guestha.channel.aio_client)
differ only in how bytes move; what they send and how they read an answer is here, once:
the request's bytes (the member as Host, the operator's epoch header, keep-alive, a JSON
body with Content-Length) and an `AnswerReader` that is fed whatever bytes arrived and
hands back each complete answer. The agent answers with Content-Length only
(docs/agent-api.md), so an answer is a head and a counted body, nothing else; anything
else is a `FramingError` (the clients report it as a ChannelError of stage "http").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guestha.protocol.constants import REPLAYED_HEADER

MAX_HEAD = 64 * 1024  # bytes of an answer's status line and headers
MAX_BODY = 16 * 1024 * 1024  # bytes of an answer's body


class Closed(Exception):
    """The agent closed the connection; `early`: before a byte of the answer (so a
    request on a kept-alive connection may be sent once more)."""

    def __init__(self, early: bool) -> None:
        super().__init__("closed")
        self.early = early


class FramingError(Exception):
    """The agent's answer is not HTTP/1.1 as the channel speaks it (the message says how)."""


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

    @property
    def closes(self) -> bool:
        """The agent closes the connection after this answer (`Connection: close`)."""
        return self.headers.get("connection", "").lower() == "close"


def request_bytes(
    method: str, path: str, host: str, body: Any = None, epoch_header: tuple[str, int] | None = None
) -> bytes:
    """One request: `host` is the member's name; `epoch_header` (name, epoch) the
    operator's epoch, on every request that has one (its quorum vote at the agent)."""
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "Accept: application/json",
        "Connection: keep-alive",
        f"Content-Length: {len(data)}",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    if epoch_header is not None:
        head.append(f"{epoch_header[0]}: {epoch_header[1]}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def parse_head(head: str) -> tuple[int, dict[str, str]]:
    """The status and headers (lower-case names) of an answer's head (without its blank
    line)."""
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FramingError(f"not an HTTP/1.1 status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise FramingError(f"bad header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def body_length(headers: Mapping[str, str]) -> int:
    """How many body bytes follow the head: its Content-Length, which must be there."""
    if headers.get("transfer-encoding"):
        raise FramingError("the agent sent Transfer-Encoding; it answers with Content-Length only")
    text = headers.get("content-length")
    if text is None or not text.isdigit():
        raise FramingError(f"answer without a valid Content-Length ({text!r})")
    length = int(text)
    if length > MAX_BODY:
        raise FramingError(f"answer body of {length} bytes is over {MAX_BODY}")
    return length


class AnswerReader:
    """The answers in the bytes one connection received, in order.

    `feed` what arrived, then `next()` gives a complete answer or None (more bytes are
    needed). Bytes after an answer stay for the next one. `started` says whether any byte
    of the answer being read has arrived: a connection closed before that was closed
    idle (safe to send again), one closed after it broke an answer.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str], int] | None = None  # status, headers, length

    @property
    def started(self) -> bool:
        return self._head is not None or bool(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()
        self._head = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> AgentResponse | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise FramingError(f"answer head over {MAX_HEAD} bytes")
                return None
            status, headers = parse_head(bytes(self._buffer[:end]).decode("latin-1"))
            del self._buffer[: end + 4]
            self._head = status, headers, body_length(headers)
        status, headers, length = self._head
        if len(self._buffer) < length:
            return None
        raw = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._head = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            raise FramingError(f"answer is not JSON: {exc}") from None
        return AgentResponse(status, body, headers)
