"""The operator's main job, end to end: real agents put into the simulator's guests by
the operator's own injection, a 3-member cluster with a Failover group (a Process and an
OCF resource) and a Parallel group, and an observer outside the operator that counts the
application's live copies every 20 ms and fails the test on any instant with two.

Scenarios run in order on one cluster (each starts from where the one before left the
group), as an administrator would drive it: autostart, the application killed past its
restartLimit (failover, the Service follows), a fault cleared, a Switchover back, a
guest crashed (failover, the VM restarts and rejoins), a guest frozen (fenced, then
failover), a freeze, and a ServiceGroup edited while Online.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubevirtkit import Namespace

from kits import simguests
from kits.sgstatus import fast_cluster, group, online_on, reasons, state_on, vm

pytestmark = pytest.mark.controlplane

CLUSTER = "web"
MEMBERS = ("web-a", "web-b", "web-c")
MARKER = f"0.{random.randrange(10**8, 10**9)}"  # in the application's command line only
TIMEOUT = 90.0


def shop(resources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
        "metadata": {"name": "shop"},
        "spec": {
            "cluster": CLUSTER, "type": "Failover",
            "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
            "resources": resources if resources is not None else [
                {"name": "state", "type": "OCF",
                 "attributes": {"agent": "heartbeat:Dummy",
                                "parameters": {"state": "/run/shop-dummy.state"}},
                 "monitor": {"intervalSeconds": 1}},
                {"name": "app", "type": "Process", "dependsOn": ["state"],
                 "restartLimit": 1,
                 "monitor": {"intervalSeconds": 1},
                 "attributes": {"command": ["/bin/sleep", "86400", MARKER]}}],
            "service": {"name": "shop", "ports": [{"port": 80, "targetPort": 8080}]},
        },
    }


LOGS = {
    "apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
    "metadata": {"name": "logs"},
    "spec": {"cluster": CLUSTER, "type": "Parallel",
             "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
             "resources": [{"name": "shipper", "type": "Process",
                            "attributes": {"command": ["/bin/sleep", "86400"]}}]},
}


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    name = f"failover-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def copies() -> Iterator[simguests.CopyCounter]:
    with simguests.CopyCounter(MARKER.encode()) as counter:
        yield counter
    counter.check()


def slice_addresses(ns: Namespace) -> list[str]:
    found = json.loads(ns.kubectl("get", "endpointslices", "-l",
                                  "kubernetes.io/service-name=shop", "-o", "json").stdout)
    return sorted(a for s in found["items"] for e in s.get("endpoints") or ()
                  for a in e.get("addresses") or ())


def address(ns: Namespace, member: str) -> str:
    vmi = ns.running(member)
    return str(vmi["status"]["interfaces"][0]["ipAddress"])


def app_pid(ns: Namespace, simulator: Any, member: str) -> int:
    uid = ns.running(member)["metadata"]["uid"]
    in_guest = set(simguests.guest_processes(simulator.state_dir, uid))
    pids = [p for p in simguests.copies(MARKER.encode()) if p in in_guest]
    assert len(pids) == 1, f"{member}: application pids {pids}"
    return pids[0]


@pytest.fixture(scope="module")
def cluster(ns: Namespace, simulator: Any, copies: simguests.CopyCounter) -> Namespace:
    ns.apply(fast_cluster(CLUSTER, MEMBERS))
    for member in MEMBERS:
        ns.apply(vm(member))
    ns.apply(shop())
    ns.apply(LOGS)
    return ns


def test_autostart_onlines_the_failover_group_on_the_first_system_and_the_parallel_everywhere(
        cluster: Namespace) -> None:
    status = online_on(cluster, ("web-a",))
    assert [m["state"] for m in status["members"]] == ["Online", "Offline", "Offline"]
    online_on(cluster, MEMBERS, "logs")
    cluster.wait_for("the Service's endpoints at web-a",
                     lambda: slice_addresses(cluster) == [address(cluster, "web-a")])
    assert cluster.get("service", "shop") is not None
    assert "GroupOnline" in reasons(cluster)


def test_the_application_killed_past_its_restart_limit_fails_over_and_the_service_follows(
        cluster: Namespace, simulator: Any) -> None:
    first = app_pid(cluster, simulator, "web-a")
    os.kill(first, signal.SIGKILL)  # restartLimit 1: restarted in place
    cluster.wait_for("the application restarted on web-a",
                     lambda: app_pid(cluster, simulator, "web-a") != first)
    os.kill(app_pid(cluster, simulator, "web-a"), signal.SIGKILL)  # past the limit
    status = online_on(cluster, ("web-b",))
    assert status["lastFailover"]["from"] == "web-a"
    assert status["lastFailover"]["to"] == "web-b"
    assert status["lastFailover"]["reason"] == "ResourceFaulted"
    assert status["failovers"] == 1
    assert {m["name"]: m["state"] for m in status["members"]}["web-a"] == "Faulted"
    cluster.wait_for("the Service's endpoints at web-b",
                     lambda: slice_addresses(cluster) == [address(cluster, "web-b")])
    assert {"FailoverStarted", "FailedOver", "ResourceFaulted"} <= set(reasons(cluster))


def agent_report(ns: Namespace, member: str) -> Any:
    """The member's agent's own status report, through the channel (for messages)."""
    from guestha.channel.client import AgentClient
    from guestha.channel.transport import Member, NetworkTransport
    from guestha.controller.credentials import ClusterCredentials
    secret = ns.get("secret", f"{CLUSTER}-guestha-ca")
    assert secret is not None
    context = ClusterCredentials.from_secret(secret, ns.name, CLUSTER).ssl_context()
    with AgentClient(Member.from_vmi(ns.running(member)), NetworkTransport(context),
                     timeout=3.0) as client:
        return client.status()


def test_a_clear_clears_the_fault(cluster: Namespace) -> None:
    cluster.kubectl("annotate", "sg", "shop", "guestha.io/clear=first", "--overwrite")
    try:
        state_on(cluster, "web-a", ("Offline",))
    except AssertionError as e:
        raise AssertionError(f"{e}\nagent: {agent_report(cluster, 'web-a').groups}") from None
    assert group(cluster)["lastClear"]["value"] == "first"


def test_a_crashed_guest_fails_over_and_its_vm_rejoins(cluster: Namespace,
                                                       simulator: Any) -> None:
    """The group runs on web-b (after the failover above); web-b's guest host dies: it
    fails over to web-a, and web-b's VM restarts by its runStrategy and rejoins."""
    old = cluster.running("web-b")
    simguests.crash(simulator.state_dir, old["metadata"]["uid"])
    status = online_on(cluster, ("web-a",))
    assert status["lastFailover"]["reason"] == "MemberLost"
    assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == ("web-b", "web-a")
    cluster.running("web-b", other_than=old["metadata"]["uid"])
    state_on(cluster, "web-b", ("Offline",))
    online_on(cluster, MEMBERS, "logs")


def test_a_switchover_moves_the_group_to_the_member_named(cluster: Namespace) -> None:
    cluster.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "Switchover",
                   "metadata": {"name": "to-b"},
                   "spec": {"serviceGroup": "shop", "to": "web-b"}})
    done = cluster.wait_for("the switchover to succeed", lambda: (
        cluster.get("switchover", "to-b") or {}).get("status", {}).get("phase")
        in ("Succeeded", "Failed") and cluster.get("switchover", "to-b"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert (done["status"]["from"], done["status"]["to"]) == ("web-a", "web-b")
    online_on(cluster, ("web-b",))
    cluster.wait_for("the Service's endpoints at web-b",
                     lambda: slice_addresses(cluster) == [address(cluster, "web-b")])


def test_a_frozen_guest_is_fenced_then_its_group_fails_over(cluster: Namespace,
                                                            simulator: Any) -> None:
    held = cluster.running("web-b")
    before = int(((cluster.get("igc", CLUSTER) or {}).get("status") or {}).get("fencings") or 0)
    pids = simguests.freeze(simulator.state_dir, held["metadata"]["uid"])
    try:
        status = online_on(cluster, ("web-a",))
    finally:
        simguests.thaw(pids)
    assert status["lastFailover"]["from"] == "web-b"
    cluster.wait_for("the fencing confirmed", lambda: {"FenceRequested", "Fenced"} <= set(
        reasons(cluster, CLUSTER)))
    fenced = (cluster.get("igc", CLUSTER) or {})["status"]
    assert fenced["fencings"] == before + 1 and fenced["lastFencing"]["member"] == "web-b"
    assert fenced["lastFencing"]["reason"] == "PeerTimeout"
    assert "confirmedTime" in fenced["lastFencing"]
    new = cluster.running("web-b", other_than=held["metadata"]["uid"])
    assert new["metadata"]["uid"] != held["metadata"]["uid"]


def test_a_node_that_stops_answering_while_its_guest_is_healthy_moves_nothing(
        cluster: Namespace) -> None:
    """The node under web-a falls silent (its kubelet and virt-handler: Ready=Unknown
    after the node monitor's grace): the guest runs on and its agent answers, so the
    group stays where it is and nobody is fenced."""
    node = cluster.running("web-a")["status"]["nodeName"]
    fenced = reasons(cluster, CLUSTER).count("FenceRequested")
    cluster.kube.kubectl("annotate", "node", node, "kubevirtsim.guestha.io/fault=Unresponsive",
                         "--overwrite")
    try:
        cluster.wait_for(f"node {node} Ready=Unknown", lambda: any(
            c["type"] == "Ready" and c["status"] == "Unknown"
            for c in cluster.node(node)["status"]["conditions"]), 60)
        time.sleep(5)  # passes of the supervisor with the node silent
        assert group(cluster)["onlineOn"] == ["web-a"]
        assert group(cluster)["state"] == "Online"
        assert reasons(cluster, CLUSTER).count("FenceRequested") == fenced
    finally:
        cluster.kube.kubectl("annotate", "node", node, "kubevirtsim.guestha.io/fault-")
    cluster.wait_for(f"node {node} Ready again", lambda: any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in cluster.node(node)["status"]["conditions"]), 60)


def test_an_edit_while_online_is_applied_in_place(cluster: Namespace, simulator: Any) -> None:
    before = app_pid(cluster, simulator, "web-a")
    spec = shop()["spec"]
    resources = [r for r in spec["resources"] if r["name"] != "state"]
    resources[0] = dict(resources[0], dependsOn=[], restartLimit=3)  # changed
    resources.append({"name": "extra", "type": "Process",
                      "attributes": {"command": ["/bin/sleep", "86401"]}})  # added
    cluster.apply(shop(resources))  # "state" removed
    try:
        cluster.wait_for("the extra resource online on web-a", lambda: any(
            r["name"] == "extra" and r["state"] == "Online"
            for m in group(cluster).get("members", ()) if m["name"] == "web-a"
            for r in m.get("resources", ())))
    except AssertionError as e:
        raise AssertionError(f"{e}; status {group(cluster)}; agent "
                             f"{agent_report(cluster, 'web-a').groups.get('shop')}") from None
    status = online_on(cluster, ("web-a",))
    assert status["failovers"] >= 3
    assert app_pid(cluster, simulator, "web-a") == before  # nothing moved or restarted


def test_frozen_nothing_moves_but_faults_are_reported(cluster: Namespace,
                                                      simulator: Any) -> None:
    cluster.kubectl("patch", "sg", "shop", "--type=merge", "-p",
                    '{"spec": {"frozen": true}}')
    cluster.wait_for("the Frozen condition", lambda: any(
        c["type"] == "Frozen" and c["status"] == "True"
        for c in group(cluster).get("conditions", ())))
    for _ in range(4):  # past restartLimit 3
        os.kill(app_pid(cluster, simulator, "web-a"), signal.SIGKILL)
        cluster.wait_for("the application back or faulted", lambda: (
            simguests.copies(MARKER.encode()) or
            {m["name"]: m["state"] for m in group(cluster).get("members", ())}.get("web-a")
            in ("Faulted", "Partial")))
    cluster.wait_for("the fault reported", lambda: {
        m["name"]: m["state"] for m in group(cluster).get("members", ())}.get("web-a")
        in ("Faulted", "Partial"))
    assert not group(cluster).get("onlineOn") or group(cluster)["onlineOn"] == ["web-a"]
    assert all(m["state"] != "Online" for m in group(cluster)["members"]
               if m["name"] != "web-a")


def test_the_metrics_tell_what_happened(cluster: Namespace) -> None:
    """What a Prometheus scraping the operator's /metrics sees after the scenarios
    above: the failovers by cause with their durations, the fencing, every member up,
    the group's state and where it is online, the leader, the plans timed."""
    from prometheus_client.parser import text_string_to_metric_families

    local = cluster.kube.local
    if local is None:
        pytest.skip("needs the local control plane (the operator's /metrics URL)")
    url = local.metrics_file().read_text().strip()
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def value(name: str, **labels: str) -> float:
        return sum(s.value for s in samples.get(name, ())
                   if all(s.labels.get(k) == v for k, v in labels.items()))

    mine = {"namespace": cluster.name, "cluster": CLUSTER}
    status = group(cluster)
    assert value("guestha_failovers_total", group="shop", reason="ResourceFaulted",
                 **mine) >= 1
    assert value("guestha_failovers_total", group="shop", reason="MemberLost", **mine) >= 1
    assert value("guestha_failovers_total", group="shop", **mine) == status["failovers"]
    assert value("guestha_failover_duration_seconds_count", **mine) == status["failovers"]
    assert value("guestha_fencings_total", member="web-b", outcome="Confirmed", **mine) >= 1
    assert all(value("guestha_member_up", member=m, **mine) == 1 for m in MEMBERS)
    assert value("guestha_group_state", group="shop", state=status["state"], **mine) == 1
    assert value("guestha_group_state", group="shop", **mine) == 1  # one state at a time
    assert value("guestha_group_online_members", group="logs", **mine) == len(MEMBERS)
    assert value("guestha_leader") == 1
    assert value("guestha_plan_duration_seconds_count") > 0
