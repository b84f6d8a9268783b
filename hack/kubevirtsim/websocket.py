"""The server side of RFC 6455 websockets, just what virt-api's streaming endpoints need.

KubeVirt streams (vsock, console, vnc) are websockets with the subprotocol
`plain.kubevirt.io`: every data frame is a binary message carrying raw bytes of the
stream, in either direction. The kube-apiserver proxies the upgrade to the aggregated
server unchanged, so this module sees the client's own handshake and frames.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Protocol

PLAIN_PROTOCOL = "plain.kubevirt.io"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INTERNAL_ERROR = 1011

MAX_FRAME = 1 << 24  # a client sending more than 16 MiB in one frame is refused


class Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...


class WebSocketError(Exception):
    """The peer broke the protocol (or went away mid-frame)."""


def accept_key(client_key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    digest = hashlib.sha1((client_key.strip() + _GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def is_upgrade(headers: dict[str, str]) -> bool:
    """Whether request headers (lower-case names) ask for a websocket."""
    connection = {p.strip().lower() for p in headers.get("connection", "").split(",")}
    return "upgrade" in connection and headers.get("upgrade", "").lower() == "websocket"


def chosen_protocol(headers: dict[str, str]) -> str | None:
    """The subprotocol this server speaks, if the client offered it."""
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    return PLAIN_PROTOCOL if PLAIN_PROTOCOL in offered else None


def _read_exact(reader: Reader, n: int) -> bytes:
    data = reader.read(n) if n else b""
    if len(data) < n:
        raise WebSocketError("connection closed in the middle of a frame")
    return data


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def read_frame(reader: Reader) -> tuple[bool, int, bytes]:
    """(fin, opcode, unmasked payload) of the next frame from a client (`reader` is the
    connection's buffered reader, which may already hold bytes past the handshake)."""
    b0, b1 = _read_exact(reader, 2)
    fin, opcode = bool(b0 & 0x80), b0 & 0x0F
    if b0 & 0x70:
        raise WebSocketError("reserved bits set: no extension was negotiated")
    if not b1 & 0x80:
        raise WebSocketError("a client frame was not masked")
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _read_exact(reader, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _read_exact(reader, 8))[0]
    if n > MAX_FRAME:
        raise WebSocketError(f"frame of {n} bytes is over the {MAX_FRAME}-byte limit")
    mask = _read_exact(reader, 4)
    data = _read_exact(reader, n)
    if n:
        # XOR with the repeated mask, as one big-integer operation (fast for large frames)
        key = (mask * (n // 4 + 1))[:n]
        data = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return fin, opcode, data


class ServerSocket:
    """A websocket after a successful upgrade: send binary data, read messages."""

    def __init__(self, sock: socket.socket, reader: Reader) -> None:
        self.sock = sock
        self.reader = reader
        self._send_lock = threading.Lock()
        self.closed = False

    def _send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(encode_frame(opcode, payload))

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, data)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame once (errors ignored: the peer may be gone)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self._send(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])

    def pump_to(self, write: Callable[[bytes], None]) -> None:
        """Hand every data message's bytes to `write` until the client closes."""
        while True:
            _fin, opcode, payload = read_frame(self.reader)
            if opcode == OP_CLOSE:
                self.close()
                return
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode not in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                raise WebSocketError(f"unknown opcode {opcode:#x}")
            if payload:
                write(payload)
