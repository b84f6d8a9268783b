"""A small, bounded HTTP/1.1 request reader and response writer for the agent's channel.

http.server reads headers with no overall deadline and no total size bound, so one slow
or hostile client could hold a thread forever. This reader bounds everything it reads:
the head's size, the number of headers, the body's size, and how long each part may take.
Every failure is an `HttpError` carrying a 4xx status and a message naming the problem;
nothing a client sends can raise anything else (a hypothesis test feeds it random bytes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.agent.percent import parse_query, unquote
from guestha.protocol import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


@dataclass(frozen=True)
class Limits:
    """What one request may cost the agent."""

    max_head_bytes: int = 16 * 1024  # request line + headers
    max_headers: int = 64
    max_target_bytes: int = 2048
    max_body_bytes: int = 1024 * 1024
    max_query_fields: int = 16
    head_seconds: float = 10.0  # the whole head, from its first byte
    body_seconds: float = 30.0  # the whole body, from the end of the head
    idle_seconds: float = 60.0  # between requests on a kept-alive connection


class HttpError(Exception):
    """A request the agent will not serve; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or REASONS.get(status, "Error").replace(" ", "")


class ClientGone(Exception):
    """The connection closed or failed; there is nobody left to answer."""


@dataclass
class Request:
    """One parsed request."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    version: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes = b""
    keep_alive: bool = True

    def json(self) -> Any:
        """The body as JSON (an empty body is an empty object)."""
        if not self.body.strip():
            return {}
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HttpError(400, f"body: not UTF-8 ({e.reason} at byte {e.start})") from e
        try:
            return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
        except RecursionError as e:
            raise HttpError(400, "body: JSON nested too deeply") from e
        except ValueError as e:
            raise HttpError(400, f"body: not valid JSON: {e}") from e


def _bounded_int(text: str) -> int:
    # CPython 3.9 converts long digit strings in quadratic time; no field needs more.
    if len(text.lstrip("-")) > 30:
        raise ValueError(f"integer with {len(text)} digits is too long")
    return int(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


@dataclass
class Response:
    """What a handler answers."""

    status: int
    body: Any = None  # JSON-serialisable; None for an empty body
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool) -> bytes:
        payload = b"" if self.body is None else (_dumps(self.body) + "\n").encode()
        reason = REASONS.get(self.status, "Unknown")
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        headers: dict[str, str] = {"Cache-Control": "no-store"}
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(self.headers)
        headers["Content-Length"] = str(len(payload))
        headers["Connection"] = "keep-alive" if keep_alive else "close"
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _dumps(body: Any) -> str:
    try:
        return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)
    except TypeError:  # keys of mixed types cannot be sorted
        return json.dumps(body, separators=(",", ":"), default=str)


def error_response(error: HttpError, headers: Mapping[str, str] | None = None) -> Response:
    """The JSON body every refusal has: status, a reason word, a message naming the problem."""
    return Response(error.status, {"status": error.status, "reason": error.reason,
                                   "message": error.message}, dict(headers or {}))


if TYPE_CHECKING:
    Recv = Callable[[int, float], bytes]  # (max bytes, timeout seconds) -> bytes; b"" at EOF
    Send = Callable[[bytes], None]


# One read asks for at most one TLS record's payload (16 KiB): a TLS read never returns more
# than one record, while the buffer it is given is allocated before it waits, for as long as
# the connection stays idle (a 64 KiB one per kept-alive connection before).
READ_BYTES = 16384


class RequestReader:
    """Reads requests one after another from one connection, within `Limits`.

    `recv(n, timeout)` returns up to n bytes, b"" at end of stream, and raises TimeoutError
    (or OSError) when nothing came within timeout; `send` is used only for 100-continue.
    """

    def __init__(self, recv: Recv, send: Send, limits: Limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._recv = recv
        self._send = send
        self._limits = limits
        self._clock = clock
        self._buffer = b""

    def _fill(self, deadline: float, what: str) -> bool:
        """Reads more into the buffer; False at a clean end of stream."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise HttpError(408, f"{what} not received within its time limit")
        try:
            chunk = self._recv(READ_BYTES, remaining)
        except TimeoutError as e:
            raise HttpError(408, f"{what} not received within its time limit") from e
        except OSError as e:
            raise ClientGone(str(e)) from e
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def read(self) -> Request | None:
        """The next request, or None when the client closed the connection between requests."""
        limits = self._limits
        # Wait for the first byte of a request for up to the idle time.
        idle_deadline = self._clock() + limits.idle_seconds
        while True:
            self._buffer = self._buffer.lstrip(b"\r\n")
            if self._buffer:
                break
            try:
                if not self._fill(idle_deadline, "request"):
                    return None
            except HttpError:
                return None  # an idle kept-alive connection: close quietly
        head_deadline = self._clock() + limits.head_seconds
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
                break
            if len(self._buffer) > limits.max_head_bytes:
                raise HttpError(431, f"request head larger than {limits.max_head_bytes} bytes")
            if not self._fill(head_deadline, "request head"):
                raise HttpError(400, "connection closed in the middle of the request head")
        if len(head) > limits.max_head_bytes:
            raise HttpError(431, f"request head larger than {limits.max_head_bytes} bytes")
        request = parse_head(head, limits)
        length = body_length(request.headers, limits)
        if length and request.headers.get("expect", "").lower() == "100-continue":
            try:
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError as e:
                raise ClientGone(str(e)) from e
        elif "expect" in request.headers and request.headers["expect"].lower() != "100-continue":
            raise HttpError(417, f"Expect: {request.headers['expect']!r} is not supported")
        body_deadline = self._clock() + limits.body_seconds
        while len(self._buffer) < length:
            if not self._fill(body_deadline, "request body"):
                raise HttpError(400, f"connection closed after {len(self._buffer)} of "
                                f"{length} body bytes")
        request.body, self._buffer = self._buffer[:length], self._buffer[length:]
        return request


def parse_head(head: bytes, limits: Limits) -> Request:
    """The request line and headers (without the final blank line)."""
    lines = head.split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "request line must be 'METHOD TARGET HTTP/1.1'")
    raw_method, raw_target, raw_version = parts
    if not raw_method or not all(c in _TOKEN for c in raw_method):
        raise HttpError(400, "request line: the method is not a token")
    method = raw_method.decode("ascii")
    if method not in _METHODS:
        raise HttpError(405, f"method {method[:20]} is not supported")
    if raw_version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(400, "request line: only HTTP/1.1 and HTTP/1.0 are supported")
    version = raw_version.decode("ascii")
    if len(raw_target) > limits.max_target_bytes:
        raise HttpError(414, f"request target longer than {limits.max_target_bytes} bytes")
    if not raw_target.startswith(b"/") or any(c <= 0x20 or c >= 0x7F for c in raw_target):
        raise HttpError(400, "request target must be a path starting with '/' in "
                        "printable ASCII")
    target = raw_target.decode("ascii")
    raw_path, _, raw_query = target.partition("?")
    raw_path = raw_path.split("#", 1)[0]
    try:
        path = unquote(raw_path)
    except UnicodeDecodeError as e:
        raise HttpError(400, f"request target: percent-encoding is not UTF-8: {e.reason}") from e
    try:
        pairs = parse_query(raw_query, limits.max_query_fields)
    except (ValueError, UnicodeDecodeError) as e:
        raise HttpError(400, f"query: {e}") from e
    query = dict(pairs)
    headers: dict[str, str] = {}
    if len(lines) - 1 > limits.max_headers:
        raise HttpError(431, f"more than {limits.max_headers} header fields")
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "header: line folding (obs-fold) is not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not name or not all(c in _TOKEN for c in name):
            raise HttpError(400, "header: each line must be 'Name: value' with a token name")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise HttpError(400, f"header {name.decode('ascii')}: control characters in value")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("content-length", "host", "transfer-encoding"):
                if headers[key] != text:
                    raise HttpError(400, f"header {key}: conflicting repeated values")
                continue
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Request(method, target, path, query, version, headers, b"", keep_alive)


def body_length(headers: Mapping[str, str], limits: Limits) -> int:
    """The body size the headers announce, within the limits."""
    if "transfer-encoding" in headers:
        raise HttpError(411, "Transfer-Encoding is not accepted; send the body with "
                        "Content-Length")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    if not raw.isdigit() or not raw.isascii() or len(raw) > 12:
        raise HttpError(400, f"header content-length: not a byte count: {raw[:20]!r}")
    length = int(raw)
    if length > limits.max_body_bytes:
        raise HttpError(413, f"body of {length} bytes is larger than the limit of "
                        f"{limits.max_body_bytes} bytes")
    return length
