"""Issue 3 end to end: three real agents on three guest hosts, driven through the channel.

Each guest host is booted from the #cloud-config of the operator's injection recipe (the
agent bundle, identity, TLS files, heartbeat key and a systemd unit:
guestha.cloudinit.recipe, through tests/kits/guests.py), so the agent runs as the guest's
service, not as a child of the test. The test is the operator: a client with the operator's
certificate over the guests' own addresses, and an event long-poll per agent. What is
asserted is what a user would notice: a page served from the guest, processes and mounts in
the guest, events and status on the channel.

The tests share one cluster and run in file order; each brings the group it needs Online
itself, so any one of them also runs alone.
"""

from __future__ import annotations

import calendar
import http.client
import ipaddress
import os
import signal
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kits.client import Client
from kits.cluster import configure, wait_quorum
from kits.events import EventReader, Received
from kits.guests import GuestAgent, guest_agents
from kits.pki import Pki
from kits.waiting import wait_for

pytestmark = [
    pytest.mark.agent,
    pytest.mark.skipif(os.geteuid() != 0, reason="guest hosts need root (namespaces)"),
]

MEMBERS = ("shop-a", "shop-b", "shop-c")
HEARTBEAT = {"intervalMilliseconds": 200, "peerTimeoutMilliseconds": 1000}
SELF_FENCE_SECONDS = 3
FENCING = {
    "selfFenceTimeoutSeconds": SELF_FENCE_SECONDS,
    "operatorLeaseSeconds": 6,
    "offlineTimeoutSeconds": 10,
    "watchdog": False,  # the guest hosts have no watchdog device
}
WEB_PORT = 8080
PAGE = "/etc/shop/index.html"
MOUNT_POINT = "/srv/shop"
# The web server's monitor interval: an hour, far past any wait here, so a kill seen in
# time was reported by its exit, not found by a monitor.
WEB_MONITOR = {"intervalSeconds": 3600, "offlineIntervalSeconds": 5, "timeoutSeconds": 10}


def page_text(member: str) -> str:
    return f"shop front of {member}\n"


def web_command(agent: GuestAgent) -> list[str]:
    return [
        "/usr/bin/python3",
        "-m",
        "http.server",
        str(WEB_PORT),
        "--bind",
        agent.address,
        "--directory",
        MOUNT_POINT,
    ]


def shop_group(agent: GuestAgent) -> dict[str, Any]:
    """tmpfs on /srv/shop <- a symlink in it to the page (OCF) <- a web server serving it."""
    monitor = {"intervalSeconds": 2, "offlineIntervalSeconds": 5, "timeoutSeconds": 10}
    return {
        "name": "shop",
        "type": "Failover",
        "resources": [
            {
                "name": "data",
                "type": "Mount",
                "monitor": monitor,
                "attributes": {
                    "device": "shop-tmpfs",
                    "mountPoint": MOUNT_POINT,
                    "fsType": "tmpfs",
                    "options": "size=4m,mode=0755",
                    "createMountPoint": True,
                },
            },
            {
                "name": "page",
                "type": "OCF",
                "dependsOn": ["data"],
                "monitor": monitor,
                "attributes": {
                    "agent": "heartbeat:symlink",
                    "parameters": {"link": f"{MOUNT_POINT}/index.html", "target": PAGE},
                },
            },
            {
                "name": "web",
                "type": "Process",
                "dependsOn": ["page"],
                "restartLimit": 1,
                "monitor": WEB_MONITOR,
                "attributes": {"command": web_command(agent)},
            },
        ],
    }


@dataclass
class Cluster:
    agents: list[GuestAgent]
    clients: dict[str, Client]
    readers: dict[str, EventReader]
    pki: Pki

    def by_member(self, member: str) -> GuestAgent:
        return next(a for a in self.agents if a.member == member)

    def status(self, member: str) -> dict[str, Any]:
        c = self.clients[member]
        try:
            return c.status()
        except (OSError, http.client.HTTPException):
            c.close()  # the agent restarted, or its link was just mended: once more
            return c.status()

    def command(
        self, member: str, action: str, group: str = "shop", operation_id: str | None = None
    ) -> tuple[int, Any]:
        epoch = self.status(member)["epoch"]
        return self.clients[member].command(
            "POST", f"/v1/groups/{group}/{action}", epoch, {"reason": "e2e test"}, operation_id
        )

    def group_state(self, member: str) -> str:
        return str(self.status(member)["groups"]["shop"]["state"])


def fetch(agent: GuestAgent) -> str | None:
    """The shop page from the guest's address, as a user's browser gets it (None: no answer)."""
    conn = http.client.HTTPConnection(agent.address, WEB_PORT, timeout=2)  # no proxies
    try:
        conn.request("GET", "/index.html")
        response = conn.getresponse()
        body = response.read().decode()
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def mounted(agent: GuestAgent) -> bool:
    mounts = agent.exec("cat", "/proc/self/mountinfo")
    return any(line.split()[4] == MOUNT_POINT for line in mounts.splitlines())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("e2e")
    pki = Pki(folder / "pki")

    def files(member: str) -> list[dict[str, Any]]:
        return [{"path": PAGE, "content": page_text(member)}]

    with guest_agents(folder / "guests", pki, MEMBERS, cluster="shop", extra_files=files) as agents:
        clients = {a.member: a.client(epoch=1) for a in agents}
        readers = {
            a.member: EventReader(a.client(timeout=8.0, epoch=1), poll_seconds=2.0)
            for a in agents
        }
        try:
            configure(agents, clients, 1, lambda a: [shop_group(a)], HEARTBEAT, FENCING)
            wait_quorum(agents, clients)
            yield Cluster(agents, clients, readers, pki)
        finally:
            for reader in readers.values():
                reader.close()
            for c in clients.values():
                c.close()


def resource_events(events: list[Received], group: str = "shop") -> list[tuple[str, str]]:
    return [
        (r.data["resource"], r.data["state"])
        for r in events
        if r.kind == "ResourceState" and r.data.get("group") == group
    ]


def seq_of(events: list[Received], resource: str, state: str) -> int:
    for r in events:
        if (
            r.kind == "ResourceState"
            and r.data.get("resource") == resource
            and r.data.get("state") == state
        ):
            return r.seq
    raise AssertionError(f"no ResourceState {resource} -> {state} in {resource_events(events)}")


def bring_online(cluster: Cluster, member: str) -> list[Received]:
    """Online the shop group on `member` (clearing a fault first); the events it caused."""
    reader = cluster.readers[member]
    if cluster.group_state(member) == "Online":
        return []
    if cluster.group_state(member) == "Faulted":
        code, body = cluster.command(member, "clear")
        assert code == 200, body
        wait_for(lambda: cluster.group_state(member) == "Offline", 10, what="shop cleared")
    mark = reader.mark()
    code, body = cluster.command(member, "online")
    assert code == 200, body
    reader.wait("GroupState", 20, mark, group="shop", state="Online")
    agent = cluster.by_member(member)
    wait_for(lambda: fetch(agent) == page_text(member), 10, what=f"{member} serves the page")
    return reader.since(mark)


def test_online_in_dependency_order_and_served(cluster: Cluster) -> None:
    a = cluster.agents[0]
    events = bring_online(cluster, a.member)
    # Mount, then the OCF symlink in it, then the web server: each starts only once the one
    # it depends on is Online.
    assert seq_of(events, "data", "Online") < seq_of(events, "page", "Starting")
    assert seq_of(events, "page", "Online") < seq_of(events, "web", "Starting")
    assert [s for r, s in resource_events(events) if r == "web"][-1] == "Online"
    # Their effects, seen from the host and inside the guest: a tmpfs on /srv/shop, the
    # page linked into it, served over HTTP on the guest's address.
    assert fetch(a) == page_text(a.member)
    assert mounted(a)
    assert a.exec("readlink", f"{MOUNT_POINT}/index.html").strip() == PAGE
    assert len(a.pids(web_command(a))) == 1
    status = cluster.status(a.member)
    shop = status["groups"]["shop"]
    assert shop["state"] == "Online"
    assert {r["name"]: r["state"] for r in shop["resources"]} == {
        "data": "Online",
        "page": "Online",
        "web": "Online",
    }
    # The other members: the two peers Up, quorum with all four votes, the group offline.
    for other in cluster.agents[1:]:
        s = cluster.status(other.member)
        assert {p["member"]: p["state"] for p in s["peers"]} == {
            m: "Up" for m in MEMBERS if m != other.member
        }
        assert s["quorum"]["hasQuorum"] and s["quorum"]["votes"] == 4
        assert s["quorum"]["present"] == 4 and sorted(s["quorum"]["members"]) == list(MEMBERS)
        assert s["groups"]["shop"]["state"] == "Offline"
        assert fetch(other) is None


def test_killed_process_restarts_then_faults_at_once(cluster: Cluster) -> None:
    """A kill of the web server, seen through its exit (no monitor would find it in time:
    WEB_MONITOR), restarts it; the next one faults it, and the fault is the first thing
    the operator hears of it, before the clean and the group going down. How soon, at the
    operator's long-poll: hack/bench/agent.py (faultDetection)."""
    a = cluster.agents[0]
    reader = cluster.readers[a.member]
    bring_online(cluster, a.member)
    [first] = a.pids(web_command(a))

    mark = reader.mark()
    os.kill(first, signal.SIGKILL)
    restarted = reader.wait("ResourceRestarted", 5, mark, group="shop", resource="web")
    assert restarted.data["restarts"] == 1
    reader.wait("ResourceState", 10, mark, resource="web", state="Online")
    wait_for(lambda: fetch(a) == page_text(a.member), 10, what="the restarted server answers")
    [second] = a.pids(web_command(a))
    assert second != first
    assert cluster.group_state(a.member) == "Online"

    mark = reader.mark()
    os.kill(second, signal.SIGKILL)
    fault = reader.wait("ResourceFaulted", 5, mark, group="shop", resource="web")
    assert fault.data["reason"] == "MonitorOffline"
    reader.wait("GroupState", 15, mark, group="shop", state="Faulted")
    events = reader.since(mark)
    assert events[0].seq == fault.seq, [(r.kind, r.data) for r in events[:3]]
    assert not [r for r in events if r.kind == "ResourceRestarted"], "restartLimit is 1"
    # The web server is cleaned and Faulted, then the rest of the group is taken offline
    # in reverse order: the link in the tmpfs, then the mount.
    order = [
        fault.seq,
        seq_of(events, "web", "Stopping"),
        seq_of(events, "web", "Faulted"),
        seq_of(events, "page", "Stopping"),
        seq_of(events, "page", "Offline"),
        seq_of(events, "data", "Stopping"),
        seq_of(events, "data", "Offline"),
    ]
    assert order == sorted(order), resource_events(events)
    shop = cluster.status(a.member)["groups"]["shop"]
    assert shop["state"] == "Faulted"
    assert {r["name"]: r["state"] for r in shop["resources"]} == {
        "data": "Offline",
        "page": "Offline",
        "web": "Faulted",
    }
    assert fetch(a) is None and not a.pids(web_command(a)) and not mounted(a)


def test_restarted_agent_adopts_what_runs(cluster: Cluster) -> None:
    b = cluster.agents[1]
    reader = cluster.readers[b.member]
    bring_online(cluster, b.member)
    [web] = b.pids(web_command(b))
    code, config_before = cluster.clients[b.member].get("/v1/config")
    assert code == 200
    before = cluster.status(b.member)
    agent_pid = b.agent_pid()
    assert agent_pid is not None

    mark = reader.mark()
    # The agent crashes and systemd starts it again (Restart=always): KillMode=process
    # leaves what it started running. (A stop, `systemctl restart` included, takes the
    # Failover groups offline first: tests/agent/test_agent_stop.py.)
    b.exec("systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "guestha-agent")
    started = reader.wait("AgentStarted", 20, mark)
    assert started.stream != before["events"]["stream"]
    assert b.agent_pid() not in (None, agent_pid)
    online = reader.wait("GroupState", 15, mark, group="shop", state="Online")
    assert online.stream == started.stream
    after = cluster.status(b.member)
    assert after["incarnation"] > before["incarnation"]
    assert {r["name"]: r["state"] for r in after["groups"]["shop"]["resources"]} == {
        "data": "Online",
        "page": "Online",
        "web": "Online",
    }
    # Adopted, not started again: the same process, the only one, still serving.
    assert b.pids(web_command(b)) == [web]
    assert fetch(b) == page_text(b.member)
    new_run = [r for r in reader.since(mark) if r.stream == started.stream]
    probed = {
        r.data["resource"]
        for r in new_run
        if r.kind == "ResourceState" and r.data["state"] == "Online" and r.data["reason"] == "Probe"
    }
    assert probed == {"data", "page", "web"}, resource_events(new_run)
    assert ("web", "Starting") not in resource_events(new_run)
    assert not [r for r in new_run if r.kind in ("ResourceFaulted", "ResourceRestarted")]
    # The configuration came back from the agent's disk, epoch included.
    code, config_after = cluster.clients[b.member].get("/v1/config")
    assert code == 200 and config_after == config_before
    assert after["epoch"] == before["epoch"]


def test_isolated_agent_self_fences_others_keep_quorum(cluster: Cluster) -> None:
    c = cluster.agents[2]
    others = cluster.agents[:2]
    bring_online(cluster, c.member)
    assert cluster.status(c.member)["quorum"]["hasQuorum"]
    marks = {m: r.mark() for m, r in cluster.readers.items()}

    cut_wall, cut = time.time(), time.monotonic()
    c.cut()
    bound = HEARTBEAT["peerTimeoutMilliseconds"] / 1000 + SELF_FENCE_SECONDS + 3.0

    def others_keep_quorum() -> None:
        # two members + the operator: three of four votes
        for o in others:
            s = cluster.status(o.member)
            assert s["quorum"]["hasQuorum"] and s["selfFence"]["state"] == "Idle", s["quorum"]

    def isolated_group_down() -> bool:
        others_keep_quorum()
        # Seen inside the cut-off guest: its web server and its mount are gone.
        return not c.pids(web_command(c)) and not mounted(c)

    try:
        wait_for(
            isolated_group_down, bound, 0.1, what="the isolated guest takes its shop group down"
        )
        fenced_after = time.monotonic() - cut
        for o in others:
            s = cluster.status(o.member)
            assert {p["member"]: p["state"] for p in s["peers"]}[c.member] == "Down"
            assert s["quorum"]["alivePeers"] == [x.member for x in others if x != o]
    finally:
        c.mend()
    reader = cluster.readers[c.member]
    fenced = reader.wait("SelfFenced", 15, marks[c.member])
    assert fenced.event["time"]
    kinds = [r.kind for r in reader.since(marks[c.member])]
    assert kinds.index("QuorumLost") < kinds.index("SelfFencing") < kinds.index("SelfFenced")
    fenced_at = _event_wall_time(fenced.event)
    assert fenced_at - cut_wall <= bound, (fenced_at - cut_wall, fenced.event)
    reader.wait("SelfFenceCleared", 15, marks[c.member])
    s = cluster.status(c.member)
    assert s["quorum"]["hasQuorum"] and s["groups"]["shop"]["state"] == "Offline"
    assert fetch(c) is None
    for o in others:
        seen = cluster.readers[o.member].since(marks[o.member])
        downs = [r.data for r in seen if r.kind == "PeerDown"]
        assert [d["member"] for d in downs] == [c.member]
        # how long before the event it was last heard (the cut), not 0: a peer stops
        # counting a member once either direction is silent, so it can be less than the
        # peer timeout, never more than the time since the cut
        age = downs[0]["lastHeardMilliseconds"]
        assert isinstance(age, int) and 0 < age <= (time.monotonic() - cut) * 1000, age
        assert not [r for r in seen if r.kind in ("QuorumLost", "SelfFencing", "SelfFenced")]
    print(
        f"\nisolated guest's group down {fenced_after:.2f} s after the cut "
        f"(SelfFenced stamped {fenced_at - cut_wall:.2f} s)"
    )


def _event_wall_time(event: dict[str, Any]) -> float:
    stamp = str(event["time"])
    return (
        calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000
    )


def _refusal(agent: GuestAgent, cert: tuple[Path, Path] | None) -> str:
    """How a client with `cert` (None: none at all) fares: '' if it got an answer."""
    client = agent.client(cert, timeout=5.0, anonymous=cert is None)
    try:
        code, _ = client.get("/v1/status")
        return "" if code == 200 else f"http {code}"
    except (ssl.SSLError, OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        client.close()


def test_channel_refusals_over_guest_addresses(cluster: Cluster) -> None:
    a = cluster.agents[0]
    assert not ipaddress.ip_address(a.address).is_loopback
    client = cluster.clients[a.member]
    # A stale epoch: refused, nothing changes.
    epoch = cluster.status(a.member)["epoch"] + 1
    code, body = client.command("POST", "/v1/groups/shop/probe", epoch)
    assert code == 200, body
    code, body = client.command("POST", "/v1/groups/shop/online", epoch - 1)
    assert code == 409 and body["reason"] == "StaleEpoch", body
    assert cluster.status(a.member)["epoch"] == epoch
    # A repeated operation id: applied once, the retry answered from the record.
    reader = cluster.readers[a.member]
    mark = reader.mark()
    op = f"e2e-probe-{time.monotonic_ns()}"
    first = client.command("POST", "/v1/groups/shop/probe", epoch, operation_id=op)
    assert first[0] == 200, first
    again = client.command("POST", "/v1/groups/shop/probe", epoch, operation_id=op)
    assert again == first and client.last_headers.get("Guestha-Replayed") == "true"
    reader.wait("CommandApplied", 5, mark, operationId=op)
    marker = reader.mark()
    code, _ = client.command("POST", "/v1/groups/shop/probe", epoch)  # a fresh one after
    assert code == 200
    reader.wait("CommandApplied", 5, marker)
    assert len(reader.since(mark, "CommandApplied", operationId=op)) == 1
    # Clients without the operator's certificate: refused before any handler runs.
    before = cluster.status(a.member)["channel"]
    refusals = {
        name: _refusal(a, cert)
        for name, cert in (
            ("none", None),
            ("foreign CA", cluster.pki.foreign),
            ("wrong name", cluster.pki.wrong_cn),
        )
    }
    assert all(refusals.values()), refusals
    after = cluster.status(a.member)["channel"]
    assert (
        after["refusedCertificate"]
        + after["handshakeFailed"]
        - (before["refusedCertificate"] + before["handshakeFailed"])
        >= 3
    ), (before, after)
    assert not _refusal(a, cluster.pki.operator)
