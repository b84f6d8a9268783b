"""The channel's listener: mutual TLS, one thread per connection, hard limits on everything.

Only the operator may talk to an agent: the client certificate must chain to the cluster
CA (ssl's CERT_REQUIRED against the CA file) and name the operator (its subject CN, or a
DNS/URI subject alternative name, equal to Identity.operator_name). Anything else is cut
off right after the handshake, before a byte of HTTP is read.

Connections that have not finished their handshake are the only ones a stranger can
open, so they are bounded separately and evict each other: when the pre-handshake pool is
full, the oldest is dropped, so a flood of slow strangers cannot keep the operator out.
Authenticated connections have their own cap. Every read has a deadline (http1.Limits).

Each request is handed to `on_request` with the moment its first byte arrived, before it
is handled: that is where the agent decides whether it counts as the operator's contact
(its quorum vote, guestha.agent.agent.Agent.operator_request). A finished handshake is no
contact: an operator that lost its leadership still holds a valid certificate.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict

from guestha.agent.http1 import (
    ClientGone,
    HttpError,
    Limits,
    Request,
    RequestReader,
    Response,
    error_response,
)
from guestha.agent.listener import tcp_listener
from guestha.agent.sockets import SocketThread
from guestha.protocol import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable

    Handler = Callable[[Request], Response]
    OnRequest = Callable[[Request, float], None]  # the request, when it arrived (monotonic)

log = logging.getLogger(__name__)


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """TLS 1.2+, the agent's certificate, client certificates required against the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def peer_names(cert: dict[str, Any]) -> list[str]:
    """The subject CNs and DNS/URI subject alternative names of a verified peer certificate."""
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn
             if key == "commonName"]
    names.extend(value for kind, value in cert.get("subjectAltName", ())
                 if kind in ("DNS", "URI"))
    return names


class ChannelServer(SocketThread):
    """Serves `handler` over mutual TLS on (address, port)."""

    def __init__(self, address: str, port: int, context: ssl.SSLContext, operator_name: str,
                 handler: Handler, on_request: OnRequest,
                 limits: Limits | None = None, max_connections: int = 32,
                 max_handshaking: int = 64, handshake_seconds: float = 5.0,
                 listener: socket.socket | None = None) -> None:
        self._context = context
        self._operator = operator_name
        self._handler = handler
        self._on_request = on_request
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.max_handshaking = max_handshaking
        self.handshake_seconds = handshake_seconds
        if listener is None:  # else a bound, listening socket (guestha.agent.listener)
            listener = tcp_listener(address, port)
        super().__init__(listener, "channel-accept")
        self._lock = threading.Lock()
        self._handshaking: OrderedDict[int, socket.socket] = collections.OrderedDict()
        self._connections: dict[int, socket.socket] = {}
        self._ids = 0
        self.counters: dict[str, int] = {"accepted": 0, "refusedCertificate": 0,
                                         "handshakeFailed": 0, "evicted": 0, "overloaded": 0,
                                         "requests": 0, "clientErrors": 0}

    def reload(self, context: ssl.SSLContext) -> None:
        """Serves new connections with another TLS context (rotated certificates)."""
        self._context = context

    def close(self) -> None:
        """Stops accepting and cuts every connection."""
        super().close()
        with self._lock:
            socks = list(self._handshaking.values()) + list(self._connections.values())
        for s in socks:
            _shutdown(s)

    def connection_counts(self) -> dict[str, int]:
        with self._lock:
            return {"handshaking": len(self._handshaking), "open": len(self._connections)}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def _loop(self) -> None:  # accepts
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError as e:
                if self._stopping.is_set():
                    return
                log.warning("accept: %s", e)  # e.g. EMFILE: back off instead of spinning
                time.sleep(0.1)
                continue
            with self._lock:
                self._ids += 1
                cid = self._ids
                self.counters["accepted"] += 1
                while len(self._handshaking) >= self.max_handshaking:
                    _, oldest = self._handshaking.popitem(last=False)
                    self.counters["evicted"] += 1
                    _shutdown(oldest)
                self._handshaking[cid] = conn
            try:
                threading.Thread(target=self._serve, args=(cid, conn, peer),
                                 name=f"channel-{cid}", daemon=True).start()
            except RuntimeError:  # cannot start a thread: refuse this one
                with self._lock:
                    self._handshaking.pop(cid, None)
                conn.close()

    def _serve(self, cid: int, conn: socket.socket, peer: Any) -> None:
        tls: ssl.SSLSocket | None = None
        try:
            conn.settimeout(self.handshake_seconds)
            try:
                tls = self._context.wrap_socket(conn, server_side=True,
                                                do_handshake_on_connect=False)
                with self._lock:  # from now on, eviction must shut the TLS socket down
                    if cid not in self._handshaking:
                        return
                    self._handshaking[cid] = tls
                tls.do_handshake()
                cert = tls.getpeercert()
            except (OSError, ValueError) as e:
                self._count("handshakeFailed")
                log.debug("channel %s: handshake failed: %s", peer, e)
                return
            names = peer_names(cert or {})
            with self._lock:
                if self._handshaking.pop(cid, None) is None:
                    return  # evicted while finishing
                authorised = self._operator in names
                if authorised and len(self._connections) < self.max_connections:
                    self._connections[cid] = tls
                    admitted = True
                else:
                    admitted = False
            if not authorised:
                self._count("refusedCertificate")
                log.warning("channel %s: refused: the client certificate names %s, not %r",
                            peer, names or "nobody", self._operator)
                return
            if not admitted:
                self._count("overloaded")
                self._answer_once(tls, Response(503, {
                    "status": 503, "reason": "TooManyConnections",
                    "message": f"this agent serves at most {self.max_connections} "
                               f"connections at a time"}))
                return
            self._serve_requests(tls)
        except Exception:
            log.exception("channel %s: connection failed", peer)
        finally:
            with self._lock:
                self._handshaking.pop(cid, None)
                self._connections.pop(cid, None)
            _shutdown(tls if tls is not None else conn)
            (tls if tls is not None else conn).close()

    def _answer_once(self, tls: ssl.SSLSocket, response: Response) -> None:
        try:
            tls.settimeout(2.0)
            tls.sendall(response.encode(keep_alive=False))
        except OSError:
            pass

    def _serve_requests(self, tls: ssl.SSLSocket) -> None:
        # When the first byte of the request being read arrived. A request read without a
        # new recv (all of it came with the one before: pipelining) is dated like that one.
        first_byte: float | None = None
        arrived = time.monotonic()

        def recv(n: int, timeout: float) -> bytes:
            nonlocal first_byte
            tls.settimeout(max(0.001, timeout))
            try:
                data = tls.recv(n)
            except socket.timeout as e:
                raise TimeoutError(str(e)) from e
            if data and first_byte is None:
                first_byte = time.monotonic()
            return data

        def send(data: bytes) -> None:
            tls.settimeout(self.limits.body_seconds)
            tls.sendall(data)

        reader = RequestReader(recv, send, self.limits)
        while not self._stopping.is_set():
            try:
                request = reader.read()
            except HttpError as e:
                self._count("clientErrors")
                self._send(tls, error_response(e), keep_alive=False)
                return
            except ClientGone:
                return
            if request is None:
                return
            if first_byte is not None:
                arrived, first_byte = first_byte, None
            self._count("requests")
            try:
                self._on_request(request, arrived)
                response = self._handler(request)
            except HttpError as e:
                response = error_response(e)
            except Exception as e:
                log.exception("channel: %s %s failed", request.method, request.path)
                response = error_response(HttpError(500, f"internal error: {e}"))
            keep = request.keep_alive and not self._stopping.is_set()
            if not self._send(tls, response, keep_alive=keep) or not keep:
                return

    def _send(self, tls: ssl.SSLSocket, response: Response, keep_alive: bool) -> bool:
        try:
            tls.settimeout(self.limits.body_seconds)
            tls.sendall(response.encode(keep_alive))
            return True
        except OSError:
            return False


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
