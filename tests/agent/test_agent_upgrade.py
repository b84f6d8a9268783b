"""Issue 16 item 3: a newer agent bundle installed over the channel (PUT /v1/bundle).

Three guest hosts run the agent as cloud-init installed it (the recipe's unit under the
guest's service manager: Restart=always, KillMode=process). The test is the operator.
It puts a bundle with another version (the same sources, another VERSION: the test hook
bundle.build(version=...)) to one member whose Failover group runs a Process: the agent
answers, exits, is started again by its service manager into the trial, which commits
itself; the Process is adopted (same pid, never stopped or started), the peers keep their
quorum and nobody self-fences. A bundle that crashes at start is rolled back: the agent
that comes back is the previous one, saying which trial it rolled back.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from guestha.cloudinit import bundle, recipe
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

MEMBERS = ("up-a", "up-b", "up-c")
# A peer timeout shorter than a restart (RestartSec=1 and two interpreter starts, about
# 2.5 s): the peers do lose the member for a moment, and keep their quorum without it.
HEARTBEAT = {"intervalMilliseconds": 250, "peerTimeoutMilliseconds": 1500}
FENCING = {"selfFenceTimeoutSeconds": 10, "operatorLeaseSeconds": 15,
           "offlineTimeoutSeconds": 10, "watchdog": False}
# The watchdog: a stand-in file (the guest hosts have no device). Each run writes one
# byte a second from its start; a disarming close would write "V" after them.
WATCHDOG = "/var/lib/guestha-watchdog"
APP = ["/usr/bin/python3", "-c", "import time; time.sleep(100000)", "upgrade-test-app"]


def app_group(agent: GuestAgent) -> dict[str, Any]:
    return {"name": "app", "type": "Failover", "resources": [{
        "name": "sleeper", "type": "Process",
        "monitor": {"intervalSeconds": 1, "offlineIntervalSeconds": 5, "timeoutSeconds": 10},
        "attributes": {"command": APP}}]}


@dataclass
class Cluster:
    agents: list[GuestAgent]
    clients: dict[str, Client]
    readers: dict[str, EventReader]

    def status(self, member: str) -> dict[str, Any]:
        c = self.clients[member]
        try:
            return c.status()
        except OSError:
            c.close()
            return c.status()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("upgrade")
    pki = Pki(folder / "pki")
    def files(member: str) -> list[dict[str, Any]]:
        return [{"path": WATCHDOG, "content": ""}]

    with guest_agents(folder / "guests", pki, MEMBERS, cluster="up", extra_files=files,
                      watchdog_device=WATCHDOG) as agents:
        clients = {a.member: a.client(epoch=1) for a in agents}
        readers = {a.member: EventReader(a.client(timeout=8.0, epoch=1), poll_seconds=2.0)
                   for a in agents}
        try:
            configure(agents, clients, 1, lambda a: [app_group(a)], HEARTBEAT, FENCING)
            wait_quorum(agents, clients)
            first = agents[0].member
            code, body = clients[first].command("POST", "/v1/groups/app/online", 1, {})
            assert code == 200, body
            wait_for(lambda: clients[first].status()["groups"]["app"]["state"] == "Online",
                     20, what="the app Online")
            yield Cluster(agents, clients, readers)
        finally:
            for reader in readers.values():
                reader.close()
            for c in clients.values():
                c.close()


def put_bundle(client: Client, data: bytes, version: str,
               operation_id: str | None = None) -> tuple[int, Any]:
    body = {"bundle": base64.b64encode(data).decode(), "version": version,
            "sha256": hashlib.sha256(data).hexdigest()}
    return client.command("PUT", "/v1/bundle", 1, body, operation_id)


def crashing_bundle(version: str) -> bytes:
    """A well-formed bundle of `version` whose program exits at once, as a bundle with a
    bug in its start-up would."""
    return bundle.build(recipe.GUEST_PYTHON, version=version,
                        crash="this trial crashes at start").data


def kinds(events: list[Received], *names: str) -> list[Received]:
    return [r for r in events if r.kind in names]


def test_a_new_bundle_restarts_the_agent_and_adopts_what_runs(cluster: Cluster) -> None:
    a = cluster.agents[0]
    reader = cluster.readers[a.member]
    before = cluster.status(a.member)
    [app] = a.pids(APP)
    marks = {m: r.mark() for m, r in cluster.readers.items()}
    new = bundle.build(recipe.GUEST_PYTHON, version="test-upgrade-2")

    code, answer = put_bundle(cluster.clients[a.member], new.data, new.version, "up-1")
    assert code == 200, answer
    assert answer["restarting"] is True and answer["version"] == "test-upgrade-2"
    assert answer["previousVersion"] == before["agentVersion"]

    started = reader.wait("AgentStarted", 30, marks[a.member])
    assert started.data["agentVersion"] == "test-upgrade-2"
    wait_for(lambda: cluster.status(a.member)["agentVersion"] == "test-upgrade-2", 10,
             what="the new agent answering")
    after = cluster.status(a.member)
    assert after["incarnation"] > before["incarnation"]
    # the watchdog: left armed by the run that exited (no magic close), opened again
    assert before["watchdog"]["armed"] and after["watchdog"]["armed"]
    assert after["watchdog"]["petting"]
    assert "V" not in a.exec("cat", WATCHDOG)
    assert "the watchdog left armed for the next run" in a.journal()
    # it runs from its trial file, which it made the unit's bundle once it was up
    assert after["bundle"] == {"path": recipe.GUEST_PATHS.bundle + ".trial-test-upgrade-2",
                               "rollback": None}
    # committed: the unit's path holds the new bundle, the old one kept beside it
    assert a.exec("sha256sum", recipe.GUEST_PATHS.bundle).split()[0] == new.sha256
    assert a.exec("ls", recipe.GUEST_PATHS.bundle + ".previous").strip()
    # the application: the same process, never stopped or started again
    wait_for(lambda: cluster.status(a.member)["groups"]["app"]["state"] == "Online", 10,
             what="the app Online in the new run")
    assert a.pids(APP) == [app]
    new_run = [r for r in reader.since(marks[a.member]) if r.stream == started.stream]
    states = [(r.data["resource"], r.data["state"]) for r in kinds(new_run, "ResourceState")]
    assert states == [("sleeper", "Online")], states  # the probe found it, nothing more
    assert not kinds(new_run, "ResourceFaulted", "ResourceRestarted", "SelfFencing")
    # the peers lost it for longer than their peer timeout, kept their quorum throughout;
    # nobody self-fenced
    for member, r in cluster.readers.items():
        seen = r.since(marks[member])
        assert not kinds(seen, "SelfFencing", "SelfFenced"), member
        if member != a.member:
            assert a.member in [e.data["member"] for e in kinds(seen, "PeerDown")], seen
            assert not kinds(seen, "QuorumLost"), (member, [e.data for e in seen])
    # the same operation again is answered from the record, not applied again
    code, again = put_bundle(cluster.clients[a.member], new.data, new.version, "up-1")
    assert code == 200 and again == answer
    assert cluster.clients[a.member].last_headers.get("Guestha-Replayed") == "true"
    # and the version it runs: nothing to do
    code, same = put_bundle(cluster.clients[a.member], new.data, new.version)
    assert code == 200 and same["restarting"] is False


def test_a_bundle_that_crashes_at_start_is_rolled_back(cluster: Cluster) -> None:
    a = cluster.agents[1]
    reader = cluster.readers[a.member]
    before = cluster.status(a.member)
    mark = reader.mark()
    bad = crashing_bundle("test-broken-3")

    code, answer = put_bundle(cluster.clients[a.member], bad, "test-broken-3")
    assert code == 200 and answer["restarting"] is True, answer

    started = reader.wait("AgentStarted", 40, mark)
    assert started.data["agentVersion"] == before["agentVersion"]
    after = cluster.status(a.member)
    assert after["agentVersion"] == before["agentVersion"]
    rollback = after["bundle"]["rollback"]
    assert rollback is not None and rollback["version"] == "test-broken-3", after["bundle"]
    assert after["bundle"]["path"] == recipe.GUEST_PATHS.bundle
    journal = a.journal()
    assert "this trial crashes at start" in journal
    assert not [p for p in a.exec("ls", os.path.dirname(recipe.GUEST_PATHS.bundle)).split()
                if ".trial-" in p]
    assert a.pids(APP) == [] and after["groups"]["app"]["state"] == "Offline"
    wait_quorum(cluster.agents, cluster.clients)


def test_bad_uploads_are_refused_naming_the_field(cluster: Cluster) -> None:
    a = cluster.agents[2]
    client = cluster.clients[a.member]
    good = bundle.build(recipe.GUEST_PYTHON, version="test-upgrade-4")
    body = {"bundle": base64.b64encode(good.data).decode(), "version": good.version,
            "sha256": "0" * 64}
    code, answer = client.command("PUT", "/v1/bundle", 1, body)
    assert code == 400 and answer["message"].startswith("body.sha256:"), answer
    code, answer = put_bundle(client, good.data, "test-upgrade-5")
    assert code == 400 and "not 'test-upgrade-5'" in answer["message"], answer
    code, answer = put_bundle(client, b"not a zip", "test-upgrade-6")
    assert code == 400 and "not an agent bundle" in answer["message"], answer
    code, answer = client.command("PUT", "/v1/bundle", 0, {
        "bundle": body["bundle"], "version": good.version, "sha256": good.sha256})
    assert code == 409 and answer["reason"] == "StaleEpoch", answer
    assert cluster.status(a.member)["agentVersion"] != "test-upgrade-4"
