"""The operator's side of the guest agent channel, as a test holds it: HTTPS with the
operator's client certificate, JSON in and out, the operator's epoch on every request.

Deliberately not guestha.channel's client: this one lets a test send what the operator
never would (no certificate, a foreign one, a stale epoch, a replayed operation id) and
see the agent's raw answer.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

from guestha.protocol.constants import EPOCH_HEADER
from kits.pki import Pki


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address whose certificate is checked against a name (the member): a
    guest's address is only known once it booted, after its certificate was issued."""

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext, timeout: float, tls_name: str
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls_context = context
        self._tls_name = tls_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._tls_name)


class Client:
    """One kept-alive HTTPS connection to one agent (not for two threads at once)."""

    def __init__(
        self,
        address: str,
        port: int,
        pki: Pki,
        cert: tuple[Path, Path] | None,
        server_name: str,
        timeout: float = 30.0,
        tls_name: str | None = None,
        epoch: int | None = None,
    ) -> None:
        self.address, self.port = address, port
        # The operator's epoch, sent as Guestha-Epoch on every request: what makes a request
        # count as the operator's quorum vote at the agent (docs/agent-api.md). None: no
        # header (the request is answered, but is no contact).
        self.epoch = epoch
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self.context = ctx
        self.server_name = server_name
        # None: the certificate must name the address (kits.agentproc's agents); else this
        # name (kits.guests' agents, whose address comes after their certificate).
        self.tls_name = tls_name
        self.timeout = timeout
        self.last_headers: dict[str, str] = {}
        self._conn: http.client.HTTPSConnection | None = None

    def connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            if self.tls_name is None:
                self._conn = http.client.HTTPSConnection(
                    self.address, self.port, context=self.context, timeout=self.timeout
                )
            else:
                self._conn = _NamedHTTPSConnection(
                    self.address,
                    self.port,
                    context=self.context,
                    timeout=self.timeout,
                    tls_name=self.tls_name,
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body or None); a kept-alive connection the agent closed is opened
        once more."""
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"}
        if self.epoch is not None:
            hdrs[EPOCH_HEADER] = str(self.epoch)
        hdrs.update(headers or {})
        for attempt in range(2):
            conn = self.connection()
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
                self.last_headers = dict(resp.getheaders())
                return resp.status, json.loads(raw) if raw else None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def status(self) -> dict[str, Any]:
        """GET /v1/status, which must answer 200."""
        code, body = self.get("/v1/status")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def command(
        self,
        method: str,
        path: str,
        epoch: int,
        body: dict[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> tuple[int, Any]:
        """A command as the operator sends it: its epoch and an operation id (a new one
        unless given) in the body, the epoch in the header."""
        payload = {"epoch": epoch, "operationId": operation_id or uuid.uuid4().hex, **(body or {})}
        return self.request(method, path, payload, {EPOCH_HEADER: str(epoch)})
