"""Certificate rotation over the channel (PUT /v1/tls) against a real agent process: the
agent serves new connections with the certificate it was given, open connections keep
theirs, its group keeps running untouched, and a certificate that does not load changes
nothing. The files are replaced too, so a restarted agent serves the new one."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from guestha.protocol.tls import TlsStatus
from kits.agentproc import AgentProc, unique_sleep
from kits.pki import Pki
from kits.simguests import copies
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

SLEEP = unique_sleep()
SHOP = {"name": "shop", "type": "Failover", "resources": [
    {"name": "app", "type": "Process", "attributes": {"command": SLEEP},
     "monitor": {"intervalSeconds": 1}}]}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[AgentProc, Pki]]:
    pki = Pki(tmp_path / "pki")
    proc = AgentProc("web-t", "127.0.0.11", tmp_path / "web-t", pki, port=17520,
                     heartbeat_port=17521).start()
    try:
        yield proc, pki
    finally:
        proc.retire()
        proc.stop()


def served(agent: AgentProc, pki: Pki) -> x509.Certificate:
    """The certificate a new connection gets."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.load_cert_chain(str(pki.operator[0]), str(pki.operator[1]))
    with socket.create_connection((agent.address, agent.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=agent.member) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def app_pids() -> list[int]:
    return copies(SLEEP[-1].encode())


def test_a_certificate_put_over_the_channel_is_served_without_a_restart(
        agent: tuple[AgentProc, Pki]) -> None:
    a, pki = agent
    c = a.client(epoch=1)
    code, body = c.command("PUT", "/v1/config", 1, {
        "groups": [SHOP], "fencing": {"selfFenceTimeoutSeconds": 0, "watchdog": False}})
    assert code == 200, body
    # the operator's vote counts from the agent's next judgement (a tick), not at once
    wait_for(lambda: c.status()["quorum"]["hasQuorum"], 10, what="quorum with the operator")
    code, body = c.command("POST", "/v1/groups/shop/online", 1)
    assert code == 200, body
    wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Online", 20,
             what="shop online")
    pids = app_pids()
    assert len(pids) == 1, pids
    before = served(a, pki)
    status = c.status()
    assert status["tls"] == TlsStatus.of(before.public_bytes(Encoding.PEM).decode()).to_dict()

    new = pki.agent_keypair(a.member, a.address)
    code, body = c.command("PUT", "/v1/tls", 1, {"certificate": new.cert.decode(),
                                                 "key": new.key.decode()})
    assert code == 200, body
    assert body["tls"] == TlsStatus.of(new.cert.decode()).to_dict()

    after = served(a, pki)
    assert after.serial_number == x509.load_pem_x509_certificate(new.cert).serial_number
    assert after.serial_number != before.serial_number
    # the kept-alive connection opened before goes on with its own session
    assert c.get("/v1/healthz")[0] == 200
    status = c.status()
    assert status["tls"] == body["tls"]
    assert status["groups"]["shop"]["state"] == "Online"
    assert app_pids() == pids, "the application was restarted"
    events = c.get("/v1/events?after=0")[1]["events"]
    reloaded = [e for e in events if e["kind"] == "TLSReloaded"]
    assert reloaded and reloaded[-1]["data"]["source"] == "channel"
    assert Path(a.folder.parent / "pki" / f"agent-{a.member}.crt").read_bytes() == new.cert
    c.close()


def test_a_certificate_that_does_not_load_changes_nothing(
        agent: tuple[AgentProc, Pki]) -> None:
    a, pki = agent
    c = a.client(epoch=1)
    before = served(a, pki)
    cert_file = a.folder.parent / "pki" / f"agent-{a.member}.crt"
    on_disk = cert_file.read_bytes()
    one, other = pki.agent_keypair(a.member, a.address), pki.agent_keypair(a.member)
    code, body = c.command("PUT", "/v1/tls", 1, {"certificate": one.cert.decode(),
                                                 "key": other.key.decode()})
    assert code == 400 and body["reason"] == "Invalid", body
    assert "body.certificate, body.key" in body["message"], body
    code, body = c.command("PUT", "/v1/tls", 1, {"certificate": "not a certificate",
                                                 "key": other.key.decode()})
    assert code == 400 and body["message"].startswith("body.certificate"), body
    code, body = c.command("PUT", "/v1/tls", 1, {"certificate": one.cert.decode()})
    assert code == 400 and body["message"].startswith("body.key"), body
    assert served(a, pki).serial_number == before.serial_number
    assert cert_file.read_bytes() == on_disk
    assert not [p for p in cert_file.parent.iterdir() if p.name.startswith(".tls-")]
    c.close()


def test_a_restarted_agent_serves_the_certificate_it_was_given(
        agent: tuple[AgentProc, Pki]) -> None:
    a, pki = agent
    c = a.client(epoch=1)
    new = pki.agent_keypair(a.member, a.address)
    code, body = c.command("PUT", "/v1/tls", 1, {"certificate": new.cert.decode(),
                                                 "key": new.key.decode()})
    assert code == 200, body
    c.close()
    assert a.stop() == 0
    a.start()
    assert served(a, pki).serial_number == \
        x509.load_pem_x509_certificate(new.cert).serial_number
