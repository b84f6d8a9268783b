"""Mutual TLS over any stream of bytes that is not a socket (a KubeVirt vsock websocket).

The VSOCK transport's bytes travel in websocket messages through the kube-apiserver, so
guestha's own TLS cannot be put on a socket with `wrap_socket`. It runs on an
`ssl.SSLObject` with two `ssl.MemoryBIO`s instead: whatever TLS wants to send is taken
from the outgoing BIO and sent as one binary message; whatever arrives is fed into the
incoming BIO. Chosen over a socketpair with a bridge thread because it needs no thread per
connection (the operator keeps two connections to every member), errors and timeouts
surface in the caller's own thread, and closing is one call, with nothing left running.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Protocol


class MessagePipe(Protocol):
    """A message-framed byte transport (the websocket): what TLSStream runs on."""

    def send(self, data: bytes) -> None: ...

    def receive(self) -> bytes:
        """The next message's bytes; b"" when the peer closed. Raises TimeoutError."""
        ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...


class TLSStream:
    """A client TLS connection over a MessagePipe, with a socket's sendall/recv/settimeout."""

    def __init__(self, pipe: MessagePipe, context: ssl.SSLContext, server_hostname: str) -> None:
        self._pipe = pipe
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._closed = False

    def settimeout(self, timeout: float | None) -> None:
        self._pipe.settimeout(timeout)

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._pipe.send(data)

    def _fill(self) -> None:
        data = self._pipe.receive()
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def handshake(self) -> None:
        """Runs the handshake (raises ssl.SSLError when the agent refuses or is not ours)."""
        while True:
            try:
                self._tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def getpeercert(self) -> dict[str, object] | None:
        cert = self._tls.getpeercert()
        return dict(cert) if cert else None

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self._tls.write(view)
            except ssl.SSLWantReadError:  # a renegotiation-like exchange: read first
                self._flush()
                self._fill()
                continue
            view = view[n:]
        self._flush()

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes of plaintext; b"" when the agent closed the connection."""
        while True:
            try:
                data = self._tls.read(size)
                self._flush()  # TLS 1.3 may answer (e.g. key updates) while reading
                return data
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ssl.SSLError, OSError):
            self._tls.unwrap()  # close_notify, without waiting for the agent's
        with contextlib.suppress(OSError, TimeoutError):
            self._flush()
        self._pipe.close()
