"""Heartbeats under attack, with real agents on guest hosts (network namespaces).

What a peer's datagrams prove is what quorum rests on, so each test plays someone who
should not be able to change it: an unprivileged user of a guest who binds the heartbeat
port to take the datagrams.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from agentkit import AgentProc, Operator, can_use_netns, lan_agents, wait_for

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
