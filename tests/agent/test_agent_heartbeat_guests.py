"""Heartbeats under attack, with real agents on guest hosts (network namespaces).

What a peer's datagrams prove is what quorum rests on, so each test plays someone who
should not be able to change it: an unprivileged user of a guest who binds the heartbeat
port to take the datagrams; someone on the LAN who records a member's heartbeats and plays
them back after the receiver restarted, or after the sender restarted and died; a member
(root in its guest) that forges another member's heartbeats, from its own address and
from the other's. The attacker's tools are in wire.py (raw sockets in the guest's
namespace).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from guestha.agent.heartbeat import encode
from guestha.protocol.keys import pair_key
from kits.agentproc import AgentProc
from kits.lan import can_use_netns
from kits.lanagents import Operator, lan_agents
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

MEMBERS = ("web-a", "web-b", "web-c")
HEARTBEAT = {"intervalMilliseconds": 200, "peerTimeoutMilliseconds": 1000}
FENCING = {"selfFenceTimeoutSeconds": 0, "operatorLeaseSeconds": 5}
NOBODY = 65534
# The system's interpreter: the test's own may live where user nobody cannot reach it.
SYSTEM_PYTHON = "/usr/bin/python3"


def configure(agents: list[AgentProc], operator: Operator,
              peers: dict[str, list[dict[str, Any]]] | None = None) -> None:
    everyone = [{"member": a.member, "address": a.address} for a in agents]
    for a in agents:
        code, body = operator.clients[a.member].command("PUT", "/v1/config", 1, {
            "peers": (peers or {}).get(a.member, everyone), "heartbeat": HEARTBEAT,
            "fencing": FENCING})
        assert code == 200, body


def peer_states(operator: Operator, member: str) -> dict[str, str]:
    status = operator.clients[member].status()
    return {p["member"]: p["state"] for p in status["peers"]}


def all_up(operator: Operator, agents: list[AgentProc]) -> bool:
    return all(set(peer_states(operator, a.member).values()) == {"Up"} for a in agents)


# -- the heartbeat port belongs to the agent

THIEF = textwrap.dedent("""
    import errno, json, socket, sys, time
    address, udp, tcp, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    results, held = {}, []
    for name, kind, where, options in (
            ("udp same address", socket.SOCK_DGRAM, address, ["SO_REUSEADDR"]),
            ("udp any address", socket.SOCK_DGRAM, "0.0.0.0", ["SO_REUSEADDR"]),
            ("udp reuseport", socket.SOCK_DGRAM, address, ["SO_REUSEADDR", "SO_REUSEPORT"]),
            ("tcp same address", socket.SOCK_STREAM, address, ["SO_REUSEADDR"])):
        s = socket.socket(socket.AF_INET, kind)
        for option in options:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, option), 1)
        try:
            s.bind((where, tcp if kind == socket.SOCK_STREAM else udp))
            if kind == socket.SOCK_STREAM:
                s.listen(1)
        except OSError as e:
            results[name] = errno.errorcode.get(e.errno, str(e.errno))
            s.close()
        else:
            results[name] = "bound"
            held.append(s)
    stolen, deadline = 0, time.monotonic() + seconds
    for s in held:
        s.setblocking(False)
    while time.monotonic() < deadline:
        for s in held:
            try:
                if s.type == socket.SOCK_DGRAM and s.recv(9000):
                    stolen += 1
            except OSError:
                pass
        time.sleep(0.01)
    print(json.dumps({"binds": results, "stolen": stolen}))
""")


def test_an_unprivileged_user_cannot_take_the_heartbeat_port(tmp_path: Path) -> None:
    """A guest user binds the agent's heartbeat port (with SO_REUSEADDR, on the guest's own
    address while the agent listens on any address): the bind must fail, else the
    datagrams go to the more specific socket, the agent hears no peer and self-fences."""
    if not can_use_netns():
        pytest.skip("needs root and iproute2 for network namespaces")
    # web-c listens on 0.0.0.0, the identity file's default.
    with lan_agents(tmp_path, "gt", MEMBERS, {"web-c": {"listen": "0.0.0.0"}}) as (_, agents):
        target = agents[2]
        operator = Operator(agents)
        try:
            configure(agents, operator)
            wait_for(lambda: all_up(operator, agents), 10, what="every peer Up")
            thief = target.netns_run(
                "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                SYSTEM_PYTHON, "-c", THIEF, target.address, str(target.heartbeat_port),
                str(target.port), "3",
                timeout=20)
            assert thief.returncode == 0, thief.stderr
            report = json.loads(thief.stdout)
            assert report["binds"] == {"udp same address": "EADDRINUSE",
                                       "udp any address": "EADDRINUSE",
                                       "udp reuseport": "EADDRINUSE",
                                       "tcp same address": "EADDRINUSE"}, report
            assert report["stolen"] == 0
            assert set(peer_states(operator, target.member).values()) == {"Up"}
        finally:
            operator.close()


# -- what a datagram proves: replays and forgeries do not keep a dead member alive

WIRE = Path(__file__).with_name("wire.py")
SECRET = b"the operator's heartbeat secret for tests"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[AgentProc]]:
    if not can_use_netns():
        pytest.skip("needs root and iproute2 for network namespaces")
    with lan_agents(tmp_path, "gh", MEMBERS) as (_, agents):
        yield agents


def keyed_peers(agents: list[AgentProc]) -> dict[str, list[dict[str, Any]]]:
    """Every member's peers with their pair keys, as the operator gives them."""
    return {a.member: [{"member": p.member, "address": p.address,
                        "heartbeatKey": base64.b64encode(pair_key(
                            SECRET, a.cluster, a.member, p.member)).decode()}
                       for p in agents if p is not a]
            for a in agents}


def wire(agent: AgentProc, *args: str) -> str:
    done = agent.netns_run(sys.executable, str(WIRE), *args, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def sending(agent: AgentProc, source: str, to: AgentProc, interval: float,
            payloads: str) -> Iterator[None]:
    """wire.py sends `payloads` (a JSON list of base64) from `agent`'s namespace, while the
    body of the with-statement runs; it must have sent them all by the end."""
    cmd = ["ip", "netns", "exec", str(agent.netns), sys.executable, str(WIRE), "send",
           source, to.address, str(to.heartbeat_port), str(interval)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(payloads)
    proc.stdin.close()
    try:
        yield
    finally:
        proc.wait(30)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == 0, err


def never_up(operator: Operator, member: str, dead: str, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        state = peer_states(operator, member)[dead]
        assert state != "Up", f"{member} counts the dead {dead} as {state}"
        time.sleep(0.1)


def test_datagrams_replayed_after_the_receiver_restarted_prove_nothing(
        cluster: list[AgentProc]) -> None:
    """Someone on the LAN records web-a's heartbeats to web-b. web-a dies, web-b restarts
    (it keeps nothing of its peers), and the recording is played to it from web-a's
    address: web-b must not count the dead web-a."""
    a, b, _ = cluster
    operator = Operator(cluster)
    try:
        configure(cluster, operator)
        wait_for(lambda: all_up(operator, cluster), 10, what="every peer Up")
        recorded = json.loads(wire(b, "capture", "eth0", a.address, str(b.heartbeat_port),
                                   "15", "5"))
        assert len(recorded) >= 10
        a.signal(signal.SIGKILL)
        assert b.stop() == 0
        b.start()
        wait_for(lambda: peer_states(operator, b.member)[a.member] != "Up", 10,
                 what="the restarted web-b")
        with sending(a, a.address, b, 0.2, json.dumps(recorded)):
            never_up(operator, b.member, a.member, len(recorded) * 0.2)
        counters = operator.clients[b.member].status()["heartbeat"]["counters"]
        assert counters["unconfirmed"] >= 1 and counters["accepted"] >= 1, counters
    finally:
        operator.close()


def test_datagrams_recorded_before_the_sender_restarted_are_replays(
        cluster: list[AgentProc]) -> None:
    """Someone on the LAN records web-a's heartbeats to web-b. web-a restarts: its
    incarnation, kept in its state folder, grows, and web-b learns the new one. Then
    web-a dies and the recording is played to web-b from web-a's address: every datagram
    is older than what web-b accepted from web-a, so each is counted a replay and web-a
    is never counted again."""
    a, b, _ = cluster
    operator = Operator(cluster)
    try:
        configure(cluster, operator)
        wait_for(lambda: all_up(operator, cluster), 10, what="every peer Up")
        before_restart = operator.clients[a.member].status()["incarnation"]
        recorded = json.loads(wire(b, "capture", "eth0", a.address, str(b.heartbeat_port),
                                   "15", "5"))
        assert len(recorded) >= 10
        assert a.stop() == 0
        a.start()
        operator.clients[a.member].close()  # a new connection to the new agent process
        assert operator.clients[a.member].status()["incarnation"] > before_restart
        wait_for(lambda: all_up(operator, cluster), 10, what="web-a Up again after its restart")
        a.signal(signal.SIGKILL)
        wait_for(lambda: peer_states(operator, b.member)[a.member] != "Up", 10,
                 what="web-b losing the dead web-a")
        before = operator.clients[b.member].status()["heartbeat"]["counters"]
        with sending(a, a.address, b, 0.2, json.dumps(recorded)):
            never_up(operator, b.member, a.member, len(recorded) * 0.2)
        after = operator.clients[b.member].status()["heartbeat"]["counters"]
        assert after["replayed"] - before["replayed"] == len(recorded), (before, after)
    finally:
        operator.close()


def _forged(key: bytes, b_incarnation: int, b_seq: int, count: int) -> str:
    """web-a's heartbeats to web-b as web-c can make them: it sees web-b's run and seq in
    web-b's datagrams to it, and holds the cluster key and its own pair keys."""
    forged = []
    for i in range(count):
        payload = json.dumps({"cluster": "web", "to": "web-b", "incarnation": 2**62,
                              "seq": i + 1, "echo": {"incarnation": b_incarnation,
                                                     "seq": b_seq + i},
                              "view": {}}).encode()
        forged.append(base64.b64encode(encode(key, "web-a", payload)).decode())
    return json.dumps(forged)


def test_another_member_cannot_speak_for_a_dead_one(cluster: list[AgentProc]) -> None:
    """web-c (root in its guest, holding what the operator gave it) forges web-a's
    heartbeats to web-b after web-a died: from its own address, then from web-a's."""
    a, b, c = cluster
    operator = Operator(cluster)
    try:
        configure(cluster, operator, keyed_peers(cluster))
        wait_for(lambda: all_up(operator, cluster), 10, what="every peer Up")
        assert operator.clients[b.member].status()["heartbeat"]["keys"] == "pair"
        a.signal(signal.SIGKILL)
        wait_for(lambda: peer_states(operator, b.member)[a.member] == "Down", 10,
                 what="web-b loses the dead web-a")
        b_status = operator.clients[b.member].status()
        b_seq = {p["member"]: p for p in operator.clients[c.member].status()["peers"]}[
            b.member]["seq"]
        keys = [c.key, pair_key(SECRET, "web", "web-a", "web-c"),
                pair_key(SECRET, "web", "web-b", "web-c")]
        before = b_status["heartbeat"]["counters"]
        for source, key in [(c.address, c.key)] + [(a.address, k) for k in keys]:
            with sending(c, source, b, 0.1, _forged(key, b_status["incarnation"], b_seq, 10)):
                never_up(operator, b.member, a.member, 1.0)
        after = operator.clients[b.member].status()["heartbeat"]["counters"]
        assert after["wrongSource"] - before["wrongSource"] >= 10, after
        assert after["badMac"] - before["badMac"] >= 30, after
    finally:
        operator.close()
