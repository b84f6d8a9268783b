"""The channel's certificates (guestha.channel.pki) as the two real TLS ends read them: the
agent's own channel server (guestha.agent.server, in this process) and the operator's TLS
context (guestha.channel.transport.operator_context, through NetworkTransport).

The agent must accept the operator's certificate of the cluster's CA and refuse a foreign
one; the operator must accept the member's certificate by the member's name alone (no
address in it) and refuse one for another member.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestha.agent.http1 import Request, Response
from guestha.agent.server import ChannelServer, server_context
from guestha.channel import pki
from guestha.channel.client import AgentClient
from guestha.channel.transport import ChannelError, Member, NetworkTransport, operator_context
from guestha.protocol.constants import OPERATOR_NAME
from kits.waiting import wait_for

pytestmark = pytest.mark.unit

UTC = datetime.UTC
T0 = datetime.datetime(2030, 1, 1, tzinfo=UTC)


def write(folder: Path, stem: str, pair: pki.KeyPair) -> tuple[Path, Path]:
    cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key


class Agent:
    """guestha.agent's channel server on 127.0.0.1 with a member's certificate; it answers
    every request with its member's name."""

    def __init__(self, folder: Path, ca: pki.KeyPair, member: str,
                 addresses: tuple[str, ...] = ()) -> None:
        self.ca_file = folder / "ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        cert, key = write(folder, f"agent-{member}", pki.issue_member(ca, member, addresses))
        context = server_context(str(cert), str(key), str(self.ca_file))
        self.server = ChannelServer("127.0.0.1", 0, context, OPERATOR_NAME, self.answer,
                                    lambda request, at: None)
        self.member = member

    def answer(self, request: Request) -> Response:
        return Response(200, {"member": self.member, "path": request.path})

    def client(self, context: ssl.SSLContext, name: str | None = None) -> AgentClient:
        host, port = self.server.address
        member = Member("ns", name or self.member, port, host)
        return AgentClient(member, NetworkTransport(context), timeout=5.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[pki.KeyPair, Agent, Path]]:
    ca = pki.new_ca("web")
    agent = Agent(tmp_path, ca, "web-a")
    agent.server.start()
    try:
        yield ca, agent, tmp_path
    finally:
        agent.server.close()


def test_the_agent_accepts_the_operators_certificate_and_is_known_by_its_name(
        cluster: tuple[pki.KeyPair, Agent, Path]) -> None:
    ca, agent, folder = cluster
    cert, key = write(folder, "operator", pki.issue_operator(ca))
    with agent.client(operator_context(agent.ca_file, cert, key)) as c:
        answer = c.request("GET", "/anything")
    assert answer.status == 200 and answer.body == {"member": "web-a", "path": "/anything"}
    assert agent.server.counters["refusedCertificate"] == 0


def refused(agent: Agent, context: ssl.SSLContext) -> ChannelError:
    with agent.client(context) as c, pytest.raises(ChannelError) as caught:
        c.request("GET", "/anything")
    return caught.value


def test_the_agent_refuses_the_operators_name_from_a_foreign_ca(
        cluster: tuple[pki.KeyPair, Agent, Path]) -> None:
    _, agent, folder = cluster
    cert, key = write(folder, "foreign", pki.issue_operator(pki.new_ca("web")))
    error = refused(agent, operator_context(agent.ca_file, cert, key))
    assert error.stage in ("tls", "closed", "http")
    wait_for(lambda: agent.server.counters["handshakeFailed"] >= 1, 5,
             what="the agent counting the failed handshake")


def test_the_agent_refuses_a_member_certificate_of_its_own_ca_as_a_client(
        cluster: tuple[pki.KeyPair, Agent, Path]) -> None:
    ca, agent, folder = cluster
    cert, key = write(folder, "peer", pki.issue_member(ca, "web-b"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(agent.ca_file))
    context.load_cert_chain(str(cert), str(key))
    # a member's certificate is for serving: OpenSSL refuses it as a client certificate
    # (extended key usage), and it does not name the operator either
    refused(agent, context)
    wait_for(lambda: agent.server.counters["handshakeFailed"]
             + agent.server.counters["refusedCertificate"] >= 1, 5,
             what="the agent counting the refusal")


def test_the_operator_refuses_an_agent_that_names_another_member(
        cluster: tuple[pki.KeyPair, Agent, Path]) -> None:
    ca, agent, folder = cluster
    cert, key = write(folder, "operator", pki.issue_operator(ca))
    context = operator_context(agent.ca_file, cert, key)
    with agent.client(context, name="web-b") as c, pytest.raises(ChannelError) as caught:
        c.request("GET", "/anything")
    assert caught.value.stage == "tls" and "web-b" in str(caught.value)


def test_a_member_certificate_carries_its_name_and_known_addresses() -> None:
    from cryptography import x509

    ca = pki.new_ca("web")
    pair = pki.issue_member(ca, "web-a", ["10.0.0.7", "fd00::7"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web-a"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7", "fd00::7"]
    assert pki.issued_by(pair.cert_pem, ca.cert_pem)
    assert not pki.issued_by(pair.cert_pem, pki.new_ca("web").cert_pem)
    assert pki.matches(pair.cert_pem, pair.key_pem)
    assert not pki.matches(pair.cert_pem, ca.key_pem)
    with pytest.raises(ValueError, match=r"addresses: 'web-a\.example' is not an IP"):
        pki.issue_member(ca, "web-a", ["web-a.example"])


def test_the_heartbeat_key_is_32_fresh_random_bytes() -> None:
    keys = {pki.new_heartbeat_key() for _ in range(8)}
    assert len(keys) == 8 and all(len(k) == 32 for k in keys)


def test_expiry_and_rotation_are_read_from_the_certificate() -> None:
    ca = pki.new_ca("web", now=T0)
    leaf = pki.issue_member(ca, "web-a", now=T0)
    start = T0 - pki.BACKDATE
    end = T0 + pki.LEAF_VALIDITY
    assert pki.expires(leaf.cert_pem) == end
    assert pki.expires(ca.cert_pem) == T0 + pki.CA_VALIDITY
    lifetime = end - start
    table = [
        (start - datetime.timedelta(seconds=1), 2 / 3, True),   # not yet valid
        (start, 2 / 3, False),
        (start + lifetime * 0.66, 2 / 3, False),
        (start + lifetime * (2 / 3), 2 / 3, True),
        (start + lifetime * 0.5, 0.5, True),
        (start + lifetime * 0.49, 0.5, False),
        (end - datetime.timedelta(seconds=1), 1.0, False),
        (end, 1.0, True),                                         # expired
    ]
    for now, fraction, due in table:
        assert pki.due_for_rotation(leaf.cert_pem, now, fraction) is due, (now, fraction)
    with pytest.raises(ValueError, match="fraction"):
        pki.due_for_rotation(leaf.cert_pem, T0, 0)
    with pytest.raises(ValueError, match="now: must carry a time zone"):
        pki.due_for_rotation(leaf.cert_pem, datetime.datetime(2030, 1, 1))


def test_a_leaf_never_outlives_its_ca() -> None:
    ca = pki.new_ca("web", now=T0)
    late = T0 + pki.CA_VALIDITY - datetime.timedelta(days=10)
    assert pki.expires(pki.issue_operator(ca, now=late).cert_pem) == pki.expires(ca.cert_pem)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="cluster: empty"):
        pki.new_ca("")
    with pytest.raises(ValueError, match="ca: not a PEM"):
        pki.issue_operator(pki.KeyPair(b"nope", b"nope"))
    with pytest.raises(ValueError, match="common name: at most 64"):
        pki.issue_member(pki.new_ca("web"), "m" * 65)
    with pytest.raises(ValueError, match="certificate: not PEM"):
        pki.expires(b"garbage")


def test_a_raw_tls_client_without_a_certificate_is_cut_off(
        cluster: tuple[pki.KeyPair, Agent, Path]) -> None:
    _, agent, _ = cluster
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(agent.ca_file))
    with socket.create_connection(agent.server.address, timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="web-a") as tls, \
            pytest.raises((ssl.SSLError, ConnectionError)):  # in sendall or in recv
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(1):
            raise ConnectionError("closed")
