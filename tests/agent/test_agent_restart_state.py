"""What the agent keeps across its own restart in the guest (docs/agent-api.md, "What the
agent keeps on disk"): a resource's fault, and the highest operator epoch. systemd restarts
the agent after a crash or for an upgrade (KillMode=process: its resources keep running);
what it had decided before must still hold after, or an operator that reads the restarted
agent would take a Faulted resource for a clean Offline one (and start its group here
again), or take orders from a deposed operator. The third thing it keeps, the incarnation
that makes recorded heartbeats worthless after a restart, is tested with the heartbeat
attacks in test_agent_heartbeat_guests.py.

Each restart is tried both ways: a stop (SIGTERM, as systemd's restart) and a crash
(SIGKILL, nothing written on the way out).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kits.agentproc import AgentProc, kill_command, unique_sleep
from kits.client import Client
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

FENCING = {"selfFenceTimeoutSeconds": 0, "watchdog": False}
RESTARTS = ["stop", "crash"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def restart(agent: AgentProc, how: str) -> None:
    """The agent goes (stopped, or killed) and starts again on the same state folder."""
    if how == "stop":
        assert agent.stop() == 0, agent.log.read_text()[-3000:]
    else:
        agent.signal(signal.SIGKILL)
        assert agent.proc is not None
        agent.proc.wait(10)
    agent.start()


def resource(client: Client, group: str, name: str) -> dict[str, Any]:
    groups = client.status()["groups"]
    [found] = [r for r in groups[group]["resources"] if r["name"] == name]
    return dict(found)


@pytest.fixture
def shop(tmp_path: Path, pki: Pki) -> Iterator[tuple[AgentProc, list[str]]]:
    """An agent with the Failover group `shop`: one Process resource that faults at its
    first exit (restartLimit 0)."""
    argv = unique_sleep()
    agent = AgentProc("web-r", "127.0.0.8", tmp_path / "agent", pki, port=17530,
                      heartbeat_port=17531).start()
    try:
        yield agent, argv
    finally:
        agent.retire()
        agent.stop()
        kill_command(argv)


def put_shop(client: Client, epoch: int, argv: list[str]) -> None:
    code, body = client.command("PUT", "/v1/config", epoch, {"groups": [
        {"name": "shop", "type": "Failover", "resources": [
            {"name": "app", "type": "Process", "restartLimit": 0,
             "monitor": {"intervalSeconds": 5, "offlineIntervalSeconds": 5},
             "attributes": {"command": argv}}]}], "fencing": FENCING})
    assert code == 200, body


@pytest.mark.parametrize("how", RESTARTS)
def test_a_fault_is_still_faulted_after_a_restart_until_it_is_cleared(
        shop: tuple[AgentProc, list[str]], how: str) -> None:
    agent, argv = shop
    c = agent.client(epoch=1)
    put_shop(c, 1, argv)
    wait_for(lambda: c.status()["quorum"]["hasQuorum"], 10, what="quorum (with the operator)")
    code, body = c.command("POST", "/v1/groups/shop/online", 1)
    assert code == 200, body
    wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Online", 20, what="Online")
    assert kill_command(argv) == 1
    wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Faulted", 20, what="Faulted")
    c.close()

    restart(agent, how)
    c = agent.client(epoch=1)
    # The restarted agent probes its resources; the fault it recorded still stands.
    wait_for(lambda: resource(c, "shop", "app")["state"] not in ("Unknown", "Starting"), 20,
             what="the probe after the restart")
    app = resource(c, "shop", "app")
    assert app["state"] == "Faulted", app
    assert c.status()["groups"]["shop"]["state"] == "Faulted"
    wait_for(lambda: c.status()["quorum"]["hasQuorum"], 10, what="quorum (with the operator)")
    code, body = c.command("POST", "/v1/groups/shop/online", 1)
    assert code == 409 and body["reason"] == "Conflict" and "clear" in body["message"], body
    assert not agent_runs(argv)

    # Cleared, it starts again, and a restart no longer finds it Faulted: a stop takes
    # the Failover group offline first, a crash leaves it running (adopted).
    code, body = c.command("POST", "/v1/groups/shop/clear", 1)
    assert code == 200, body
    wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Offline", 20, what="cleared")
    wait_for(lambda: c.status()["quorum"]["hasQuorum"], 10, what="quorum (with the operator)")
    code, body = c.command("POST", "/v1/groups/shop/online", 1)
    assert code == 200, body
    wait_for(lambda: c.status()["groups"]["shop"]["state"] == "Online", 20, what="Online")
    c.close()
    restart(agent, how)
    c = agent.client(epoch=1)
    wait_for(lambda: resource(c, "shop", "app")["state"] not in ("Unknown", "Starting"), 20,
             what="the probe after the second restart")
    assert resource(c, "shop", "app")["state"] == ("Offline" if how == "stop" else "Online")
    c.close()


def agent_runs(argv: list[str]) -> bool:
    wanted = "\0".join(argv).encode() + b"\0"
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                return True
        except OSError:
            pass
    return False


@pytest.mark.parametrize("how", RESTARTS)
def test_a_command_older_than_the_highest_epoch_is_refused_after_a_restart(
        shop: tuple[AgentProc, list[str]], how: str) -> None:
    agent, argv = shop
    c = agent.client()
    put_shop(c, 4, argv)
    code, body = c.command("POST", "/v1/groups/shop/probe", 9)
    assert code == 200, body
    c.close()

    restart(agent, how)
    c = agent.client()
    assert c.status()["epoch"] == 9
    code, body = c.command("POST", "/v1/groups/shop/probe", 8)
    assert code == 409 and body["reason"] == "StaleEpoch", body
    assert "epoch 8 is older than epoch 9" in body["message"]
    code, body = c.command("PUT", "/v1/config", 4, {"groups": [], "fencing": FENCING})
    assert code == 409 and body["reason"] == "StaleEpoch", body
    assert set(c.status()["groups"]) == {"shop"}  # the stale PUT changed nothing
    code, body = c.command("POST", "/v1/groups/shop/probe", 9)
    assert code == 200, body
    c.close()
