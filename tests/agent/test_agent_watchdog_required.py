"""fencing.watchdog (InGuestCluster spec.fencing.watchdog, default true): a Failover group
goes online only on a member whose watchdog is armed and petted, since the operator's
failover counts on a hung agent's guest being reset. Real agents on 127.0.1.x; the
watchdog device is a stand-in file (the agent writes to it as to /dev/watchdog).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kits.agentproc import AgentProc, unique_sleep
from kits.client import Client
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

SHOP = {"name": "shop", "type": "Failover", "resources": [
    {"name": "app", "type": "Process", "attributes": {"command": unique_sleep()},
     "monitor": {"intervalSeconds": 1}}]}
SIDE = {"name": "side", "type": "Parallel", "resources": []}


def configure(client: Client, epoch: int, fencing: dict[str, Any]) -> None:
    code, body = client.command("PUT", "/v1/config", epoch, {
        "groups": [SHOP, SIDE], "fencing": {"selfFenceTimeoutSeconds": 0, **fencing}})
    assert code == 200, body
    wait_for(lambda: client.status()["quorum"]["hasQuorum"], 5, what="quorum")


def online(client: Client, group: str, epoch: int) -> tuple[int, Any]:
    return client.command("POST", f"/v1/groups/{group}/online", epoch)


def test_no_failover_group_online_without_an_armed_watchdog(tmp_path: Path) -> None:
    agent = AgentProc("web-a", "127.0.1.60", tmp_path / "a", Pki(tmp_path / "pki"),
                      port=17720, heartbeat_port=17721).start()
    client = agent.client()
    try:
        configure(client, 1, {})  # watchdog: true by default, as in the CRD
        code, body = online(client, "shop", 1)
        assert (code, body["reason"]) == (409, "WatchdogNotArmed"), body
        assert "no watchdog device" in body["message"]
        assert online(client, "side", 1)[0] == 200  # Parallel groups are not fenced
        configure(client, 2, {"watchdog": False})  # the cluster does without one
        code, body = online(client, "shop", 2)
        assert code == 200, body
        wait_for(lambda: client.status()["groups"]["shop"]["state"] == "Online", 10)
    finally:
        client.close()
        agent.retire()
        agent.stop()


def test_a_failover_group_goes_online_where_the_watchdog_is_armed(tmp_path: Path) -> None:
    device = tmp_path / "watchdog"
    device.touch()
    agent = AgentProc("web-a", "127.0.1.61", tmp_path / "a", Pki(tmp_path / "pki"),
                      port=17722, heartbeat_port=17723, watchdog=device).start()
    client = agent.client()
    try:
        configure(client, 1, {})
        assert client.status()["watchdog"]["petting"] is True
        code, body = online(client, "shop", 1)
        assert code == 200, body
        wait_for(lambda: client.status()["groups"]["shop"]["state"] == "Online", 10)
    finally:
        client.close()
        agent.retire()
        agent.stop()


def test_an_unopenable_watchdog_is_named(tmp_path: Path) -> None:
    agent = AgentProc("web-a", "127.0.1.62", tmp_path / "a", Pki(tmp_path / "pki"),
                      port=17724, heartbeat_port=17725,
                      watchdog=tmp_path / "missing" / "watchdog").start()
    client = agent.client()
    try:
        configure(client, 1, {})
        code, body = online(client, "shop", 1)
        assert (code, body["reason"]) == (409, "WatchdogNotArmed"), body
        assert "cannot open" in body["message"] and "missing/watchdog" in body["message"]
    finally:
        client.close()
        agent.stop()
