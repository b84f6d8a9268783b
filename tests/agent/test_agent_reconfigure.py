"""Reconfiguring groups that run, through a real agent's channel (PUT /v1/config).

Every kind of change (a resource added, removed or changed; a group added, removed or
changed) is put while the group it touches is Online. What the operator must see: the PUT
is answered, the agent keeps answering /v1/status, and the state that follows is the one
the new configuration means (a new resource probed, never started; a removed one stopped;
a changed one keeping its running process until its next online).

Each test has an agent of its own on 127.0.1.x (ports 176xx), so one agent that hangs
cannot take the next test with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kits.agentproc import AgentProc, kill_command, unique_sleep
from kits.client import Client
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = pytest.mark.agent

_slots = itertools.count(1)
ANSWER_SECONDS = 10.0  # a hung agent fails the test after this, instead of hanging it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def agent(pki: Pki, tmp_path: Path) -> Iterator[AgentProc]:
    slot = next(_slots)
    proc = AgentProc("web-a", f"127.0.1.{slot}", tmp_path / "agent", pki,
                     port=17600 + 2 * slot, heartbeat_port=17601 + 2 * slot).start()
    yield proc
    proc.retire()
    proc.stop()


@pytest.fixture
def client(agent: AgentProc) -> Iterator[Client]:
    c = agent.client()
    c.timeout = ANSWER_SECONDS
    yield c
    c.close()


@pytest.fixture
def commands() -> Iterator[list[list[str]]]:
    """Command lines of the test's processes; whatever is left of them is killed at the end."""
    made: list[list[str]] = []
    yield made
    for argv in made:
        kill_command(argv)


def running(argv: list[str]) -> int:
    """How many processes run exactly `argv`."""
    wanted = "\0".join(argv).encode() + b"\0"
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    stat = (entry / "stat").read_text()
                    count += stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
            except OSError:
                pass
    return count


def process(name: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "Process", "attributes": {"command": argv},
            "monitor": {"intervalSeconds": 1, "offlineIntervalSeconds": 1,
                        "timeoutSeconds": 10},
            "timeouts": {"onlineSeconds": 10, "offlineSeconds": 10, "cleanSeconds": 10},
            **extra}


def put(client: Client, groups: list[dict[str, Any]]) -> dict[str, Any]:
    epoch = client.status()["epoch"]
    code, body = client.command("PUT", "/v1/config", epoch, {  # no watchdog device here
        "groups": groups, "fencing": {"selfFenceTimeoutSeconds": 0, "watchdog": False}})
    assert code == 200, body
    return dict(body)


def groups(client: Client) -> dict[str, Any]:
    return dict(client.status()["groups"])


def resources(client: Client, group: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in groups(client)[group]["resources"]}


def state(client: Client, group: str) -> str:
    return str(groups(client).get(group, {}).get("state", ""))


def online(client: Client, group: str) -> None:
    # The operator's contact counts at the agent's next tick (its quorum vote).
    wait_for(lambda: client.status()["quorum"]["hasQuorum"], 5, what="quorum")
    epoch = client.status()["epoch"]
    code, body = client.command("POST", f"/v1/groups/{group}/online", epoch)
    assert code == 200, body
    wait_for(lambda: state(client, group) == "Online", 15, what=f"{group} Online")


def answers(client: Client) -> None:
    """The agent answers its status and health, and its runner's snapshot is whole."""
    status = client.status()
    assert isinstance(status["groups"], dict) and "error" not in status["groups"], status
    code, health = client.get("/v1/healthz")
    assert code == 200 and health["status"] == "ok", health


def started(client: Client, commands: list[list[str]], names: str) -> dict[str, list[str]]:
    """Group `shop` with one Process per letter in `names`, brought Online."""
    argvs = {name: unique_sleep() for name in names}
    commands.extend(argvs.values())
    put(client, [{"name": "shop", "type": "Failover",
                  "resources": [process(n, a) for n, a in argvs.items()]}])
    wait_for(lambda: state(client, "shop") == "Offline", 10, what="shop probed")
    online(client, "shop")
    assert all(running(a) == 1 for a in argvs.values())
    return argvs


def test_a_resource_added_to_an_online_group(client: Client,
                                             commands: list[list[str]]) -> None:
    argvs = started(client, commands, "a")
    extra = unique_sleep()
    commands.append(extra)
    put(client, [{"name": "shop", "type": "Failover",
                  "resources": [process("a", argvs["a"]), process("b", extra)]}])
    answers(client)
    # Probed, never started: the group is Partial until the operator brings it online.
    wait_for(lambda: resources(client, "shop").get("b", {}).get("state") == "Offline", 10,
             what="b probed")
    assert state(client, "shop") == "Partial"
    assert running(extra) == 0 and running(argvs["a"]) == 1
    online(client, "shop")
    assert running(extra) == 1
    answers(client)


def test_a_resource_removed_from_an_online_group(client: Client,
                                                 commands: list[list[str]]) -> None:
    argvs = started(client, commands, "ab")
    put(client, [{"name": "shop", "type": "Failover",
                  "resources": [process("a", argvs["a"])]}])
    answers(client)
    wait_for(lambda: set(resources(client, "shop")) == {"a"}, 10, what="b stopped and gone")
    assert running(argvs["b"]) == 0 and running(argvs["a"]) == 1
    assert state(client, "shop") == "Online"
    answers(client)


def test_a_resource_changed_in_an_online_group(client: Client,
                                               commands: list[list[str]]) -> None:
    argvs = started(client, commands, "a")
    newer = unique_sleep()
    commands.append(newer)
    put(client, [{"name": "shop", "type": "Failover",
                  "resources": [process("a", newer, restartLimit=2)]}])
    answers(client)
    # New attributes apply at the next online; the process that runs keeps running.
    a = resources(client, "shop")["a"]
    assert (a["state"], a["pendingChange"]) == ("Online", True), a
    assert state(client, "shop") == "Online"
    assert running(argvs["a"]) == 1 and running(newer) == 0
    answers(client)


def test_a_group_added_beside_an_online_group(client: Client,
                                              commands: list[list[str]]) -> None:
    argvs = started(client, commands, "a")
    extra = unique_sleep()
    commands.append(extra)
    put(client, [{"name": "shop", "type": "Failover",
                  "resources": [process("a", argvs["a"])]},
                 {"name": "more", "type": "Parallel", "resources": [process("m", extra)]}])
    answers(client)
    wait_for(lambda: state(client, "more") == "Offline", 10, what="more probed")
    assert state(client, "shop") == "Online" and running(extra) == 0
    answers(client)


def test_an_online_group_removed(client: Client, commands: list[list[str]]) -> None:
    argvs = started(client, commands, "ab")
    put(client, [])
    answers(client)
    wait_for(lambda: "shop" not in groups(client), 15, what="shop stopped and gone")
    assert running(argvs["a"]) == 0 and running(argvs["b"]) == 0
    answers(client)


def test_an_online_group_changed(client: Client, commands: list[list[str]]) -> None:
    argvs = started(client, commands, "a")
    put(client, [{"name": "shop", "type": "Parallel",
                  "resources": [process("a", argvs["a"], critical=False)]}])
    answers(client)
    shop = groups(client)["shop"]
    assert (shop["state"], shop["type"]) == ("Online", "Parallel"), shop
    assert running(argvs["a"]) == 1
    answers(client)
