"""Bound sockets, and a socket served by a thread of its own.

The channel server (TCP) and the heartbeat receiver (UDP) both own one socket and one
daemon thread that serves it until close(); this is that shape, written once.
"""

from __future__ import annotations

import socket
import threading


def bound(address: str, port: int, kind: int) -> socket.socket:
    """A socket of `kind` (SOCK_STREAM, SOCK_DGRAM) with SO_REUSEADDR, bound to
    (address, port): IPv6 when the address has a colon. Closed again if the bind fails."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


class SocketThread:
    """A socket and the daemon thread that serves it: `_loop` runs until `_stopping` is
    set, and must notice that within the socket's 0.5 s timeout."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self._sock.settimeout(0.5)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stops the thread (waiting up to 2 s for it) and closes the socket."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._sock.close()

    def _loop(self) -> None:
        raise NotImplementedError
