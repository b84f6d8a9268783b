"""The channel's pieces that need no cluster: the agent's listener choice and identity
field, the operator side's settings, URLs, and TLS over a message pipe (TLSStream) against
a real TLS server."""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from pathlib import Path

import pytest

from guestha.agent.listener import open_listener
from guestha.channel.tlsstream import TLSStream
from guestha.channel.transport import (
    KubeAccess,
    Member,
    VsockTransport,
    operator_context,
)
from guestha.model.cluster import ChannelSpec, ClusterSpec
from guestha.protocol.fields import FieldError
from guestha.protocol.identity import Identity
from kits.pki import Pki

pytestmark = pytest.mark.unit


def test_identity_transport_defaults_to_network_and_is_validated() -> None:
    assert Identity.from_dict({"cluster": "c", "member": "m"}).transport == "Network"
    assert Identity.from_dict({"cluster": "c", "member": "m", "transport": "VSOCK"}).transport == (
        "VSOCK"
    )
    with pytest.raises(FieldError, match="transport must be one of Network, VSOCK"):
        Identity.from_dict({"cluster": "c", "member": "m", "transport": "vsock"})
    with pytest.raises(FieldError, match="transport must be a string"):
        Identity.from_dict({"cluster": "c", "member": "m", "transport": 1})


@pytest.mark.parametrize("device", ["/nonexistent/vsock", "/dev/null"])
def test_vsock_without_a_device_listens_on_the_guest_loopback(device: str) -> None:
    sock, where = open_listener("VSOCK", "0.0.0.0", 0, device=device)
    try:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[0] == "127.0.0.1"
        assert "stand-in" in where
    finally:
        sock.close()


def test_network_listens_on_the_listen_address() -> None:
    sock, where = open_listener("Network", "127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        assert where.endswith("(Network)")
    finally:
        sock.close()


def test_channel_settings_and_member_from_vmi() -> None:
    assert ClusterSpec.from_body({}).channel == ChannelSpec("Network", 7480)
    assert ChannelSpec.from_body({"channel": {"transport": "VSOCK", "port": 9000}}) == (
        ChannelSpec("VSOCK", 9000))
    with pytest.raises(ValueError, match=r"spec\.channel\.transport"):
        ChannelSpec.from_body({"channel": {"transport": "Serial"}})
    with pytest.raises(ValueError, match=r"spec\.channel\.port"):
        ChannelSpec.from_body({"channel": {"port": 0}})
    with pytest.raises(ValueError, match=r"spec\.channel\.port"):
        ChannelSpec.from_body({"channel": {"port": True}})
    vmi = {
        "metadata": {"namespace": "apps", "name": "web-a"},
        "status": {"interfaces": [{"name": "x"}, {"ipAddress": "10.0.0.12"}]},
    }
    assert Member.from_vmi(vmi, 7480) == Member("apps", "web-a", 7480, "10.0.0.12")


def test_vsock_url_is_kubevirts_subresource() -> None:
    access = KubeAccess("https://api.example:6443/prefix/", ssl.create_default_context(), ())
    transport = VsockTransport(ssl.create_default_context(), access)
    assert transport.url(Member("apps", "web-a", 7480)) == (
        "wss://api.example:6443/prefix/apis/subresources.kubevirt.io/v1/namespaces/apps/"
        "virtualmachineinstances/web-a/vsock?port=7480&tls=false"
    )


class QueuePipe:
    """A MessagePipe over a socket, one recv() per message (as websocket frames arrive)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: queue.Queue[int] = queue.Queue()

    def send(self, data: bytes) -> None:
        self.sent.put(len(data))
        self.sock.sendall(data)

    def receive(self) -> bytes:
        # small pieces: records split across messages (socket.timeout is TimeoutError)
        return self.sock.recv(1000)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


def _server(sock: socket.socket, context: ssl.SSLContext, seen: list[str]) -> None:
    with context.wrap_socket(sock, server_side=True) as tls:
        cert = tls.getpeercert() or {}
        seen.extend(v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName")
        data = b""
        while not data.endswith(b"\n"):
            chunk = tls.recv(65536)
            if not chunk:
                return
            data += chunk
        tls.sendall(data.upper() * 50)  # an answer over several records
        tls.sendall(b"END\n")


def _server_context(pki: Pki) -> ssl.SSLContext:
    cert, key = pki.agent_cert("web-a", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(pki.ca_file))
    return ctx


def test_tls_stream_runs_mutual_tls_over_messages(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ours, theirs = socket.socketpair()
    seen: list[str] = []
    server = threading.Thread(target=_server, args=(theirs, _server_context(pki), seen))
    server.start()
    stream = TLSStream(QueuePipe(ours), operator_context(pki.ca_file, *pki.operator), "web-a")
    stream.settimeout(10)
    stream.handshake()
    stream.sendall(b"hello agent\n")
    received = b""
    while not received.endswith(b"END\n"):
        chunk = stream.recv(4096)
        assert chunk
        received += chunk
    assert received == b"HELLO AGENT\n" * 50 + b"END\n"
    assert stream.recv(4096) == b""  # the server closed
    stream.close()
    server.join(10)
    assert seen == ["guestha-operator"]


def test_tls_stream_refuses_an_agent_of_another_name(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ours, theirs = socket.socketpair()

    def refused() -> None:
        with contextlib.suppress(ssl.SSLError, OSError):  # the client aborts the handshake
            _server(theirs, _server_context(pki), [])

    server = threading.Thread(target=refused, daemon=True)
    server.start()
    stream = TLSStream(QueuePipe(ours), operator_context(pki.ca_file, *pki.operator), "web-b")
    stream.settimeout(10)
    with pytest.raises(ssl.SSLCertVerificationError):
        stream.handshake()
    stream.close()
    server.join(10)
