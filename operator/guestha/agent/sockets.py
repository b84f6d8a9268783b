"""Bound sockets, and a socket served by a thread of its own.

The channel server (TCP) and the heartbeat receiver (UDP) both own one socket and one
daemon thread that serves it until close(); this is that shape, written once.
"""

from __future__ import annotations

import socket
import threading


def bound(address: str, port: int, kind: int) -> socket.socket:
    """A socket of `kind` (SOCK_STREAM, SOCK_DGRAM) bound to (address, port): IPv6 when the
    address has a colon. Closed again if the bind fails.

    SO_REUSEADDR only for TCP, where it lets a restarted agent listen again while the old
    run's connections sit in TIME_WAIT; Linux refuses a second socket on a port a TCP
    socket listens on either way. On a UDP socket it would let any user of the guest bind
    the same port (on the same or a more specific address) and receive the heartbeats in
    the agent's place: the agent would hear no peer and self-fence. Without it such a bind
    fails with EADDRINUSE (and SO_REUSEPORT needs the agent's own user).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
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
