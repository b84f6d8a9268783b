"""The operator's quorum vote at a real agent: which requests count, and from when.

The operator holds one vote at every agent while it is in contact (docs/agent-api.md,
"Quorum and self-fencing"). Only the operator in charge may hold it: a deposed one (an
older epoch) that still reaches an isolated agent would keep it quorate while the new
one fails its groups over. And the vote is dated by when a request arrived, not by when
a long-poll ended, which may be half a lease later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kits.agentproc import AgentProc
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

EPOCH = 5
LEASE = 2  # operatorLeaseSeconds: a long-poll is clamped to half of it


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    proc = AgentProc("web-v", "127.0.0.41", tmp_path / "web-v", Pki(tmp_path / "pki"),
                     port=17641, heartbeat_port=17642).start()
    c = proc.client()
    code, body = c.command("PUT", "/v1/config", EPOCH, {
        "fencing": {"selfFenceTimeoutSeconds": 0, "operatorLeaseSeconds": LEASE}})
    assert code == 200, body
    c.close()
    yield proc
    assert proc.stop() == 0, proc.log.read_text()[-3000:]


def test_requests_from_an_older_epoch_are_no_contact(agent: AgentProc) -> None:
    deposed = agent.client(epoch=EPOCH - 1)  # the operator before the last leader change
    current = agent.client(epoch=EPOCH)
    observer = agent.client()  # reads without the operator's epoch: never a vote
    try:
        until = time.monotonic() + LEASE + 1.0
        while time.monotonic() < until:
            code, _ = deposed.get("/v1/healthz")
            assert code == 200  # answered: reading is harmless, it just does not count
            time.sleep(0.2)
        quorum = observer.status()["quorum"]
        assert not quorum["operatorInContact"] and not quorum["hasQuorum"], quorum
        assert quorum["operatorLastContactMilliseconds"] is None or \
            quorum["operatorLastContactMilliseconds"] >= LEASE * 1000, quorum
        code, _ = current.get("/v1/healthz")
        assert code == 200
        wait_for(lambda: observer.status()["quorum"]["operatorInContact"], 2,
                 what="the operator in charge counted")
    finally:
        for c in (deposed, current, observer):
            c.close()


def test_a_long_poll_counts_from_when_it_arrived(agent: AgentProc) -> None:
    current = agent.client(epoch=EPOCH)
    observer = agent.client()
    try:
        wait_for(lambda: observer.status()["quorum"]["hasQuorum"], 2,
                 what="the configuration's contact counted")  # no event comes after this
        after = observer.status()["events"]["lastSeq"]
        code, body = current.get(f"/v1/events?after={after}&timeout={LEASE}")
        assert code == 200 and body["events"] == [], body  # waited LEASE/2 for nothing
        quorum = observer.status()["quorum"]
        # The agent waited at least LEASE/2 between the poll's arrival and its answer.
        assert quorum["operatorLastContactMilliseconds"] >= LEASE / 2 * 1000 - 50, quorum
    finally:
        current.close()
        observer.close()


def test_an_epoch_header_that_is_no_number_is_refused(agent: AgentProc) -> None:
    c = agent.client()
    try:
        code, body = c.request("GET", "/v1/status", headers={"Guestha-Epoch": "five"})
        assert code == 400 and "Guestha-Epoch" in body["message"], body
    finally:
        c.close()


def test_an_agent_not_yet_configured_claims_no_quorum(tmp_path: Path) -> None:
    """Before the operator's first configuration the agent does not know its cluster: it
    must not count itself and the operator as a majority of a cluster of one. It did
    (QuorumGained "2 of 2 votes"), so the configuration that named its peers read as a
    QuorumLost, and the operator took a member still joining for one cut off from its
    peers: a group that should have auto-started there went to another member (CI)."""
    proc = AgentProc("web-w", "127.0.0.42", tmp_path / "web-w", Pki(tmp_path / "pki"),
                     port=17643, heartbeat_port=17644).start()
    current = proc.client(epoch=EPOCH)
    observer = proc.client()
    try:
        code, _ = current.get("/v1/healthz")  # the operator in charge talks to it
        assert code == 200
        wait_for(lambda: observer.status()["quorum"]["operatorInContact"], 2,
                 what="the operator's request counted")
        quorum = observer.status()["quorum"]
        assert not quorum["hasQuorum"], quorum
        code, body = current.command("PUT", "/v1/config", EPOCH, {
            "fencing": {"selfFenceTimeoutSeconds": 0, "operatorLeaseSeconds": LEASE},
            "peers": [{"member": "web-x", "address": "127.0.0.43"},
                      {"member": "web-y", "address": "127.0.0.44"}]})
        assert code == 200, body
        time.sleep(0.5)  # a few ticks of the main loop
        kinds = [e["kind"] for e in observer.get("/v1/events?after=0")[1]["events"]]
        assert "QuorumGained" not in kinds and "QuorumLost" not in kinds, kinds
    finally:
        current.close()
        observer.close()
        assert proc.stop() == 0, proc.log.read_text()[-3000:]
