"""Heartbeats, quorum and self-fencing with real agents, end to end.

Three agents, each in a network namespace of its own on a bridge (so one can be cut off
for real), heartbeat each other over UDP; the test holds the operator's vote by talking
to the agents it can reach. Cutting one guest's link must make it self-fence while the
other two keep quorum; so must a break of its sending path only (a one-way partition);
pausing an agent (SIGSTOP) must not: after the pause it re-checks and hears its peers
again. The watchdog tests use a stand-in file for /dev/watchdog.

What is asserted here is behaviour (who fences, who keeps quorum), never how fast: the
timing rules are a pure function with tables (tests/unit/test_agent_quorum.py), and
timings belong to hack/bench.
"""

from __future__ import annotations

import calendar
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kits.agentproc import AgentProc, kill_command, unique_sleep
from kits.client import Client
from kits.lan import Lan, can_use_netns
from kits.lanagents import Operator, lan_agents
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

MEMBERS = ("web-a", "web-b", "web-c")
HEARTBEAT = {"intervalMilliseconds": 200, "peerTimeoutMilliseconds": 1000}
SELF_FENCE_SECONDS = 3
FENCING = {"selfFenceTimeoutSeconds": SELF_FENCE_SECONDS, "operatorLeaseSeconds": 5,
           "offlineTimeoutSeconds": 10, "watchdog": False}  # no watchdog device here


SLEEP = unique_sleep()


def shop(tmp: Path) -> dict[str, Any]:
    return {"name": "shop", "type": "Failover", "resources": [
        {"name": "app", "type": "Process", "attributes": {"command": SLEEP},
         "monitor": {"intervalSeconds": 1}}]}


def event_time(event: dict[str, Any]) -> float:
    stamp = event["time"]
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(
        stamp[20:23]) / 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Lan, list[AgentProc]]]:
    if not can_use_netns():
        pytest.skip("needs root and iproute2 for network namespaces")
    try:
        with lan_agents(tmp_path, "gq", MEMBERS) as (network, agents):
            yield network, agents
    finally:
        assert kill_command(SLEEP) == 0, "a resource outlived its agent's groups"


def configure(agents: list[AgentProc], operator: Operator, tmp: Path) -> None:
    peers = [{"member": a.member, "address": a.address} for a in agents]
    for a in agents:
        code, body = operator.clients[a.member].command("PUT", "/v1/config", 1, {
            "groups": [shop(tmp)], "peers": peers, "heartbeat": HEARTBEAT,
            "fencing": FENCING})
        assert code == 200, body
    for a in agents:
        wait_for(lambda a=a: _has_quorum(operator.clients[a.member], 4), 10,
                 what=f"{a.member} hears both peers")


def _has_quorum(client: Client, present: int) -> bool:
    try:
        quorum = client.status()["quorum"]
    except OSError:  # a link just mended, a process just resumed: ask again
        client.close()
        return False
    return bool(quorum["hasQuorum"] and quorum["present"] >= present)


def _events(client: Client, after: int) -> list[dict[str, Any]]:
    code, batch = client.get(f"/v1/events?after={after}&timeout=0")
    assert code == 200, batch
    return list(batch["events"])


def _events_when_reachable(client: Client, after: int) -> list[dict[str, Any]] | None:
    try:
        return _events(client, after)
    except OSError:
        client.close()
        return None


def _fence_events(client: Client, after: int) -> list[dict[str, Any]] | None:
    events = _events_when_reachable(client, after)
    if events and any(e["kind"] in ("SelfFenced", "SelfFenceFailed") for e in events):
        return events
    return None


def test_an_isolated_agent_self_fences_and_the_others_keep_quorum(
        cluster: tuple[Lan, list[AgentProc]], tmp_path: Path) -> None:
    network, agents = cluster
    operator = Operator(agents)
    try:
        configure(agents, operator, tmp_path)
        isolated = agents[2]
        c = operator.clients[isolated.member]
        code, body = c.command("POST", "/v1/groups/shop/online", 1)
        assert code == 200, body
        wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Online", 15,
                 what="shop online on the member to be cut off")
        status = c.status()
        assert [p["state"] for p in status["peers"]] == ["Up", "Up"]
        assert status["quorum"]["votes"] == 4
        seq = status["events"]["lastSeq"]
        others_seq = {a.member: operator.clients[a.member].status()["events"]["lastSeq"]
                      for a in agents[:2]}

        operator.paused.add(isolated.member)
        cut_at = time.time()
        network.cut(2)
        # The two others: peer web-c goes Down, quorum stays (2 members + the operator).
        deadline = time.monotonic() + SELF_FENCE_SECONDS + 4
        while time.monotonic() < deadline:
            for a in agents[:2]:
                s = operator.clients[a.member].status()
                assert s["quorum"]["hasQuorum"], s["quorum"]
                assert s["selfFence"]["state"] == "Idle", s["selfFence"]
            time.sleep(0.25)
        for a in agents[:2]:
            s = operator.clients[a.member].status()
            assert {p["member"]: p["state"] for p in s["peers"]}[isolated.member] == "Down"
            kinds = [e["kind"] for e in _events(operator.clients[a.member],
                                                others_seq[a.member])]
            assert "PeerDown" in kinds and "SelfFencing" not in kinds

        network.mend(2)
        operator.paused.discard(isolated.member)
        c.close()
        events = wait_for(lambda: _fence_events(c, seq), 15, what="the isolated agent's events")
        kinds = [e["kind"] for e in events]
        assert "QuorumLost" in kinds and "SelfFencing" in kinds and "SelfFenced" in kinds, kinds
        fenced = next(e for e in events if e["kind"] == "SelfFenced")
        lost = next(e for e in events if e["kind"] == "QuorumLost")
        assert "0 of 2 peers" in fenced["data"]["reason"]
        assert kinds.index("QuorumLost") < kinds.index("SelfFencing") < kinds.index("SelfFenced")
        took = event_time(fenced) - cut_at
        print(f"\nself-fence after isolation: quorum lost {event_time(lost) - cut_at:.2f} s, "
              f"groups offline {took:.2f} s after the cut (peer timeout "
              f"{HEARTBEAT['peerTimeoutMilliseconds'] / 1000:g} s + selfFenceTimeoutSeconds "
              f"{SELF_FENCE_SECONDS}); offline took {fenced['data']['durationMilliseconds']} ms")
        shop_state = c.status()["groups"]["shop"]
        assert shop_state["state"] in ("Offline", "Faulted"), shop_state
        # Back on the network: quorum returns and the fence is cleared, groups stay down.
        wait_for(lambda: _has_quorum(c, 4) and c.status()["selfFence"]["state"] == "Idle", 10)
        assert c.status()["groups"]["shop"]["state"] != "Online"
        assert "SelfFenceCleared" in [e["kind"] for e in _events(c, seq)]
        code, body = c.command("POST", "/v1/groups/shop/online", 1, operation_id=uuid.uuid4().hex)
        assert code == 200, body  # the operator may start it again
    finally:
        operator.close()


def test_a_member_whose_heartbeats_cannot_leave_self_fences(
        cluster: tuple[Lan, list[AgentProc]], tmp_path: Path) -> None:
    """A one-way partition: web-c still hears its peers and the operator still reaches it,
    but nothing it sends reaches its peers. They count it Down and keep quorum (two members
    and the operator); the operator will fail its group over once its quorum lease has
    passed, so web-c must not count peers that do not hear it: 2 of 4 votes, self-fence."""
    network, agents = cluster
    operator = Operator(agents)
    try:
        configure(agents, operator, tmp_path)
        mute = agents[2]
        c = operator.clients[mute.member]
        code, body = c.command("POST", "/v1/groups/shop/online", 1)
        assert code == 200, body
        wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Online", 15,
                 what="shop online on the member whose heartbeats will not get out")
        seq = c.status()["events"]["lastSeq"]
        others_seq = {a.member: operator.clients[a.member].status()["events"]["lastSeq"]
                      for a in agents[:2]}

        network.drop_outgoing_udp(2, mute.heartbeat_port)
        try:
            events = wait_for(lambda: _fence_events(c, seq), 30,
                              what=f"{mute.member} self-fences")
            kinds = [e["kind"] for e in events]
            assert "QuorumLost" in kinds and "SelfFencing" in kinds and "SelfFenced" in kinds
            status = c.status()
            assert status["groups"]["shop"]["state"] in ("Offline", "Faulted")
            assert not status["quorum"]["hasQuorum"]
            assert status["quorum"]["operatorInContact"], status["quorum"]
            for a in agents[:2]:
                s = operator.clients[a.member].status()
                assert s["quorum"]["hasQuorum"] and s["selfFence"]["state"] == "Idle", s
                assert {p["member"]: p["state"] for p in s["peers"]}[mute.member] == "Down"
                kinds = [e["kind"] for e in _events(operator.clients[a.member],
                                                    others_seq[a.member])]
                assert "PeerDown" in kinds and "SelfFencing" not in kinds, kinds
        finally:
            network.allow_outgoing_udp(2, mute.heartbeat_port)
        wait_for(lambda: _has_quorum(c, 4) and c.status()["selfFence"]["state"] == "Idle", 15,
                 what=f"{mute.member} heard both ways again")
        assert c.status()["groups"]["shop"]["state"] != "Online"
    finally:
        operator.close()


def test_a_paused_agent_rechecks_instead_of_fencing(
        cluster: tuple[Lan, list[AgentProc]], tmp_path: Path) -> None:
    _, agents = cluster
    operator = Operator(agents)
    try:
        configure(agents, operator, tmp_path)
        paused = agents[0]
        c = operator.clients[paused.member]
        seq = c.status()["events"]["lastSeq"]
        operator.paused.add(paused.member)
        paused.signal(signal.SIGSTOP)
        # Longer than the peer timeout and than selfFenceTimeoutSeconds.
        time.sleep(SELF_FENCE_SECONDS + 1.5)
        paused.signal(signal.SIGCONT)
        operator.paused.discard(paused.member)
        c.close()
        wait_for(lambda: _has_quorum(c, 3), 5, what="quorum right after the pause")
        time.sleep(1.5)  # past the re-check window
        events = _events(c, seq)
        kinds = [e["kind"] for e in events]
        assert "AgentResumed" in kinds, kinds
        assert "SelfFencing" not in kinds, kinds
        assert c.status()["selfFence"]["state"] == "Idle"
        resumed = next(e for e in events if e["kind"] == "AgentResumed")
        assert resumed["data"]["gapMilliseconds"] >= SELF_FENCE_SECONDS * 1000
    finally:
        operator.close()


def _watchdog_agent(tmp_path: Path, address: str, port: int, **env: str) -> AgentProc:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    return AgentProc("web-w", address, tmp_path / "w", Pki(tmp_path / "pki"), port=port,
                     heartbeat_port=port + 1, watchdog=device, env=env)


def _grows(path: Path, seconds: float) -> int:
    before = path.stat().st_size
    time.sleep(seconds)
    return path.stat().st_size - before


def test_the_watchdog_stops_being_petted_when_the_main_loop_hangs(tmp_path: Path) -> None:
    freeze = tmp_path / "freeze"
    a = _watchdog_agent(tmp_path, "127.0.0.7", 17520,
                        GUESTHA_AGENT_TEST_FREEZE_FILE=str(freeze),
                        GUESTHA_AGENT_TEST_HANG_SECONDS="2").start()
    assert a.watchdog is not None
    try:
        assert 2 <= _grows(a.watchdog, 3.2) <= 4  # once a second
        freeze.touch()
        time.sleep(1.2)
        assert _grows(a.watchdog, 3) == 0
        c = a.client()  # the channel still answers: only the main loop hangs
        status = c.status()
        assert status["watchdog"]["petting"] is False
        assert "main loop has not run" in status["watchdog"]["stoppedReason"]
        freeze.unlink()
        assert _grows(a.watchdog, 2) == 0  # for good: the guest is to be reset
        kinds = [e["kind"] for e in _events(c, 0)]
        assert "WatchdogStopped" in kinds
        c.close()
    finally:
        a.stop()


def test_the_watchdog_stops_when_self_fencing_cannot_finish(tmp_path: Path) -> None:
    a = _watchdog_agent(tmp_path, "127.0.0.8", 17530).start()
    assert a.watchdog is not None
    marker = tmp_path / "running"
    stuck = {"name": "stuck", "type": "Failover", "resources": [
        {"name": "app", "type": "Application", "monitor": {"intervalSeconds": 1},
         "timeouts": {"offlineSeconds": 30, "cleanSeconds": 30},
         "attributes": {"startProgram": f"touch {marker}",
                        "monitorProgram": f"test -f {marker} && exit 110 || exit 100",
                        "stopProgram": "sleep 60", "cleanProgram": "sleep 60"}}]}
    try:
        c = a.client()
        code, body = c.command("PUT", "/v1/config", 1, {
            "groups": [stuck],
            "fencing": {"selfFenceTimeoutSeconds": 1, "operatorLeaseSeconds": 2,
                        "offlineTimeoutSeconds": 2}})
        assert code == 200, body
        wait_for(lambda: c.status()["quorum"]["hasQuorum"], 3)
        code, body = c.command("POST", "/v1/groups/stuck/online", 1)
        assert code == 200, body
        wait_for(lambda: c.status()["groups"]["stuck"]["state"] == "Online", 15)
        c.close()
        # Silence: the operator's vote lapses (2 s), then 1 s without quorum, then 2 s of a
        # stop that hangs.
        time.sleep(2 + 1 + 2 + 1.5)
        assert _grows(a.watchdog, 2) == 0
        c = a.client()
        status = c.status()
        assert status["selfFence"]["state"] == "Failed", status["selfFence"]
        assert "taking the Failover groups offline" in status["watchdog"]["stoppedReason"]
        kinds = [e["kind"] for e in _events(c, 0)]
        assert "SelfFenceFailed" in kinds and "WatchdogStopped" in kinds
        c.close()
    finally:
        marker.unlink(missing_ok=True)  # the application is "stopped": nothing to leave
        a.stop()
