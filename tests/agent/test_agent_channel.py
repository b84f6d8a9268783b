"""The guest agent channel against real agent processes (issue 3, item 4).

Agents run as `python3 -m guestha.agent` (and once as the zipapp) on 127.0.0.x loopback
addresses with certificates made here; the test client holds the operator's certificate.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from guestha.cloudinit import bundle
from guestha.protocol.events import EventBatch
from guestha.protocol.status import Health, StatusReport
from kits.agentproc import AgentProc, unique_sleep
from kits.client import Client
from kits.interpreters import python39
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

SHOP = {"name": "shop", "type": "Failover", "resources": [
    {"name": "app", "type": "Process", "attributes": {"command": unique_sleep()},
     "monitor": {"intervalSeconds": 5}}]}
SIDE = {"name": "side", "type": "Parallel", "resources": []}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def agent(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    proc = AgentProc("web-a", "127.0.0.2", tmp_path_factory.mktemp("web-a"), pki,
                     port=17480, heartbeat_port=17481).start()
    yield proc
    assert proc.stop() == 0, proc.log.read_text()[-3000:]


@pytest.fixture
def client(agent: AgentProc) -> Iterator[Client]:
    c = agent.client()
    yield c
    c.close()


OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "agent-openapi.yaml"


def conforms(value: Any, schema_name: str) -> None:
    """`value` matches the schema of that name in docs/agent-openapi.yaml."""
    validators = pytest.importorskip("openapi_schema_validator")
    yaml = pytest.importorskip("yaml")
    components = yaml.safe_load(OPENAPI.read_text())["components"]
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    validators.OAS31Validator(schema).validate(value)


def config(epoch: int, client: Client, **body: Any) -> tuple[int, Any]:
    payload = {"groups": [SHOP, SIDE], "fencing": {"selfFenceTimeoutSeconds": 0}, **body}
    return client.command("PUT", "/v1/config", epoch, payload)


def test_status_answers_the_operator(client: Client, agent: AgentProc) -> None:
    status = client.status()
    assert (status["member"], status["cluster"]) == ("web-a", "web")
    assert len(status["agentVersion"]) == 16 and status["agentVersion"] == \
        bundle.build().version
    for key in ("epoch", "groups", "peers", "quorum", "selfFence", "events", "incarnation"):
        assert key in status
    assert set(status["quorum"]) >= {"votes", "present", "operatorInContact", "hasQuorum",
                                     "since"}
    # Quorum is judged on the agent's 100 ms tick: the contact shows at the next one. Only
    # a request with the operator's epoch is contact.
    client.epoch = status["epoch"]
    wait_for(lambda: client.status()["quorum"]["operatorInContact"], 2)
    code, health = client.get("/v1/healthz")
    assert code == 200 and health["status"] == "ok"
    assert Health.from_dict(health).to_dict() == health
    status = client.status()
    conforms(status, "Status")
    # The report is exactly the protocol's: every field read strictly, none left over.
    assert StatusReport.from_dict(status).to_dict() == status
    code, events = client.get("/v1/events?after=0&timeout=0")
    for event in events["events"]:
        conforms(event, "Event")
    assert EventBatch.from_dict(events).to_dict() == events


def _refused(agent: AgentProc, cert: tuple[Path, Path] | None) -> str:
    """How a client with `cert` (None: no certificate) fares; '' means it got an answer."""
    c = agent.client(cert) if cert is not None else Client(
        agent.address, agent.port, agent.pki, None, agent.member)
    try:
        code, _body = c.get("/v1/status")
        return "" if code == 200 else f"http {code}"
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return type(e).__name__ + ": " + str(e)
    finally:
        c.close()


def test_clients_without_the_operators_certificate_are_refused(
        agent: AgentProc, pki: Pki, client: Client) -> None:
    before = client.status()["channel"]
    assert _refused(agent, None)
    assert _refused(agent, pki.foreign)
    assert _refused(agent, pki.wrong_cn)
    after = client.status()["channel"]
    # no certificate / another CA: the handshake fails; the wrong name: refused right after
    assert after["handshakeFailed"] - before["handshakeFailed"] >= 2
    assert after["refusedCertificate"] - before["refusedCertificate"] >= 1
    assert after["requests"] - before["requests"] == 1  # only this client's own status
    assert not _refused(agent, pki.operator)


def test_a_stale_epoch_is_refused_and_epochs_persist(agent: AgentProc, client: Client) -> None:
    epoch = client.status()["epoch"] + 5
    code, body = config(epoch, client)
    assert code == 200 and body["applied"], body
    code, body = client.command("POST", "/v1/groups/side/probe", epoch - 1)
    assert code == 409 and body["reason"] == "StaleEpoch"
    assert f"epoch {epoch - 1} is older than epoch {epoch}" in body["message"]
    code, body = client.command("POST", "/v1/groups/side/probe", epoch + 1)
    assert code == 200, body
    assert client.status()["epoch"] == epoch + 1


def test_a_repeated_operation_is_applied_once(agent: AgentProc, client: Client) -> None:
    epoch = client.status()["epoch"]
    assert config(epoch, client)[0] == 200
    op = f"op-{uuid.uuid4().hex}"
    after = client.status()["events"]["lastSeq"]
    first = client.command("POST", "/v1/groups/side/probe", epoch, operation_id=op)
    assert first[0] == 200 and "Guestha-Replayed" not in client.last_headers
    again = client.command("POST", "/v1/groups/side/probe", epoch, operation_id=op)
    assert again == first and client.last_headers.get("Guestha-Replayed") == "true"
    code, events = client.get(f"/v1/events?after={after}&timeout=0")
    applied = [e for e in events["events"] if e["kind"] == "CommandApplied"
               and e["data"]["operationId"] == op]
    assert len(applied) == 1
    # the same id for another command is a conflict, not a replay
    code, body = client.command("POST", "/v1/groups/side/clear", epoch, operation_id=op)
    assert code == 409 and body["reason"] == "OperationIdReused"


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("PUT", "/v1/config", b"{not json", 400, "not valid JSON"),
    ("PUT", "/v1/config", b'{"epoch": 1}', 400, "body.operationId"),
    ("PUT", "/v1/config", b'{"epoch": "1", "operationId": "x"}', 400, "body.epoch"),
    ("PUT", "/v1/config", b'{"epoch": 99, "operationId": "y", "groupz": []}', 400,
     "unknown field(s) groupz"),
    ("PUT", "/v1/config", b'{"epoch": 99, "operationId": "z", "groups": '
     b'[{"name": "g", "resources": [{"name": "r", "type": "Process", "attributes": {}}]}]}',
     400, "groups[g].resources[r].attributes.command"),
    ("GET", "/v1/nothing", None, 404, "no endpoint"),
    ("DELETE", "/v1/config", None, 405, "allowed: GET, PUT"),
    ("GET", "/v1/groups/side/online", None, 405, "allowed: POST"),
    ("GET", "/v1/events", None, 400, "after"),
    ("GET", "/v1/events?after=x", None, 400, "query after"),
    ("GET", "/v1/status?x=1", None, 400, "unknown parameter"),
    ("PUT", "/v1/config", b"x" * (1024 * 1024 + 1), 413, "larger than the limit"),
])
def test_bad_requests_get_a_clear_4xx(agent: AgentProc, method: str, path: str,
                                      body: bytes | None, status: int, words: str) -> None:
    code, answer = raw_request(agent, method, path, body)
    assert code == status, answer
    assert words in answer
    conforms(json.loads(answer), "Error")


def raw_request(agent: AgentProc, method: str, path: str, body: bytes | None) -> tuple[int, str]:
    import http.client

    c = agent.client()
    conn = http.client.HTTPSConnection(agent.address, agent.port, context=c.context,
                                       timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_event_long_poll_is_prompt_and_replays(agent: AgentProc, client: Client) -> None:
    epoch = client.status()["epoch"]
    assert config(epoch, client)[0] == 200
    poller = agent.client()
    latencies: list[float] = []
    try:
        for _ in range(25):
            after = client.status()["events"]["lastSeq"]
            got: dict[str, Any] = {}

            def poll(after: int = after, got: dict[str, Any] = got) -> None:
                got["answer"] = poller.get(f"/v1/events?after={after}&timeout=10")
                got["at"] = time.time()

            t = threading.Thread(target=poll)
            t.start()
            time.sleep(0.05)  # the poll is waiting
            assert client.command("POST", "/v1/groups/side/probe", epoch)[0] == 200
            t.join(10)
            code, batch = got["answer"]
            assert code == 200 and batch["events"], batch
            first = batch["events"][0]
            emitted = time.mktime(time.strptime(first["time"][:19], "%Y-%m-%dT%H:%M:%S")) \
                - time.timezone + int(first["time"][20:23]) / 1000
            latencies.append(got["at"] - emitted)
        latencies.sort()
        median = statistics.median(latencies)
        p95 = latencies[int(len(latencies) * 0.95) - 1]
        print(f"\nevent long-poll latency over {len(latencies)} trials: median "
              f"{median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
        assert p95 < 0.2
        # Replay after reconnect: a new connection reading from an older seq gets the same.
        stream = client.status()["events"]["stream"]
        last = client.status()["events"]["lastSeq"]
        code, one = poller.get(f"/v1/events?after={last - 5}&timeout=0&stream={stream}")
        poller.close()
        code2, two = poller.get(f"/v1/events?after={last - 5}&timeout=0")
        assert code == code2 == 200
        assert [e["seq"] for e in one["events"]] == [e["seq"] for e in two["events"]] == list(
            range(last - 4, last + 1))
        assert one["events"] == two["events"]
        # Another run's stream, or a sequence from the future: 410 with a way back.
        code, gone = poller.get("/v1/events?after=1&timeout=0&stream=0000")
        assert code == 410 and gone["reason"] == "EventsGone" and gone["stream"] == stream
        code, gone = poller.get(f"/v1/events?after={last + 1000}&timeout=0")
        assert code == 410 and "ahead" in gone["message"]
        # An empty poll ends after its timeout, not before.
        start = time.monotonic()
        code, empty = poller.get(f"/v1/events?after={client.status()['events']['lastSeq']}"
                                 f"&timeout=0.5")
        assert code == 200 and empty["events"] == [] and time.monotonic() - start >= 0.45
    finally:
        poller.close()


def _tls_socket(agent: AgentProc, cert: tuple[Path, Path] | None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(agent.pki.ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    raw = socket.create_connection((agent.address, agent.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=agent.member)


def _exchange(agent: AgentProc, payload: bytes) -> int:
    """Sends raw bytes over an authenticated connection; the status answered (0: none)."""
    try:
        with _tls_socket(agent, agent.pki.operator) as s:
            s.sendall(payload)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except OSError:
        return -1


def test_a_thousand_bad_requests_leave_the_agent_serving(agent: AgentProc,
                                                         client: Client) -> None:
    import random

    rng = random.Random(3)
    kinds = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\r\n\r\n",
        lambda: b"PUT /v1/config HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n",
        lambda: b"GET /v1/status HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
        lambda: b"POST /v1/groups/side/online HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{",
        lambda: b"GET /v1/status HTTP/9.9\r\n\r\n",
        lambda: b"PUT /v1/config HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(n):
            status = _exchange(agent, rng.choice(kinds)())
            with lock:
                statuses.append(status)

    plain_garbage = 0
    threads = [threading.Thread(target=worker, args=(100,)) for _ in range(9)]
    for t in threads:
        t.start()
    for _ in range(100):  # not even TLS
        try:
            with socket.create_connection((agent.address, agent.port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(rng.getrandbits(8)
                                                             for _ in range(50)))
                s.recv(100)
        except OSError:
            pass
        plain_garbage += 1
    for t in threads:
        t.join(300)
    assert len(statuses) + plain_garbage == 1000
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    start = time.monotonic()
    assert client.status()["member"] == "web-a"
    assert time.monotonic() - start < 1.0


def test_a_slowloris_does_not_keep_the_operator_out(agent: AgentProc) -> None:
    sockets: list[socket.socket] = []
    try:
        # 150 strangers that never finish their handshake ...
        for _ in range(150):
            s = socket.create_connection((agent.address, agent.port), timeout=5)
            s.sendall(b"\x16\x03\x01")  # the start of a TLS record, then nothing
            sockets.append(s)
        # ... and 20 authenticated connections that trickle a request head.
        for _ in range(20):
            t = _tls_socket(agent, agent.pki.operator)
            t.sendall(b"GET /v1/status HTTP/1.1\r\nX-Slow: ")
            sockets.append(t)
        times = []
        for _ in range(5):
            c = agent.client()
            start = time.monotonic()
            status = c.status()
            times.append(time.monotonic() - start)
            c.close()
            assert status["member"] == "web-a"
        print(f"\nduring a slowloris of 170 connections: status in "
              f"{max(times) * 1000:.0f} ms at worst")
        assert max(times) < 1.0
        c = agent.client()
        counts = c.status()["channel"]
        c.close()
        assert counts["handshaking"] <= 64 and counts["evicted"] >= 150 - 64
    finally:
        for s in sockets:
            s.close()


def test_state_survives_a_restart_and_the_zipapp_runs(pki: Pki, tmp_path: Path) -> None:
    """The bundle, run by the oldest Python guests have (3.9) where it is installed here."""
    pyz = tmp_path / "guestha-agent.pyz"
    built = bundle.build()
    built.write(pyz)
    a = AgentProc("web-z", "127.0.0.3", tmp_path / "z", pki, port=17490,
                  heartbeat_port=17491, zipapp=pyz, python=python39() or sys.executable)
    print(f"\nthe zipapp runs under {a.python}")
    a.start()
    try:
        c = a.client()
        status = c.status()
        assert status["agentVersion"] == built.version
        code, body = config(7, c)
        assert code == 200, body
        op = "restart-op"
        first = c.command("POST", "/v1/groups/side/probe", 7, operation_id=op)
        c.close()
        assert a.stop() == 0
        a.start()
        c = a.client()
        status = c.status()
        conforms(status, "Status")
        assert status["epoch"] == 7 and set(status["groups"]) == {"shop", "side"}
        # The zipapp's own protocol (on 3.9 where there is one) reports what the
        # operator's protocol reads, groups and resources included.
        report = StatusReport.from_dict(status)
        assert report.to_dict() == status and report.groups["shop"].resources[0].name == "app"
        assert status["incarnation"] > 0
        assert c.command("POST", "/v1/groups/side/probe", 7, operation_id=op) == first
        assert c.last_headers.get("Guestha-Replayed") == "true"
        code, body = c.command("POST", "/v1/groups/side/probe", 6)
        assert code == 409 and body["reason"] == "StaleEpoch"
        c.close()
    finally:
        a.stop()


def test_online_is_refused_without_quorum(pki: Pki, tmp_path: Path) -> None:
    a = AgentProc("web-q", "127.0.0.4", tmp_path / "q", pki, port=17500,
                  heartbeat_port=17501).start()
    try:
        c = a.client()
        # Two peers that never answer: 2 of 4 votes (this member and the operator).
        code, body = c.command("PUT", "/v1/config", 1, {
            "groups": [SHOP], "peers": [{"member": "web-x", "address": "127.0.0.5"},
                                        {"member": "web-y", "address": "127.0.0.6"}],
            "fencing": {"selfFenceTimeoutSeconds": 30}})
        assert code == 200, body
        wait_for(lambda: c.status()["quorum"]["votes"] == 4, 5)
        code, body = c.command("POST", "/v1/groups/shop/online", 1)
        assert code == 409 and body["reason"] == "NoQuorum", body
        assert "2 of 4 votes" in body["message"]
        c.close()
    finally:
        a.stop()


def test_sighup_reloads_rotated_certificates(pki: Pki, tmp_path: Path) -> None:
    a = AgentProc("web-r", "127.0.0.9", tmp_path / "r", pki, port=17510,
                  heartbeat_port=17511).start()
    try:
        def served_serial() -> int:
            with _tls_socket(a, pki.operator) as s:
                der = s.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

        before = served_serial()
        pki.agent_cert(a.member, a.address)  # rotated: same paths, a new certificate
        a.signal(signal.SIGHUP)
        wait_for(lambda: served_serial() != before, 5, what="the new certificate served")
        c = a.client()
        assert "TLSReloaded" in [e["kind"] for e in c.get("/v1/events?after=0")[1]["events"]]
        c.close()
    finally:
        a.stop()
