"""Safety rules 1 and 2 under the faults where a shortcut would break them, end to end:
real agents injected into the simulator's guests, the operator run as users run it, and
an observer outside the operator that counts the application's live copies every 20 ms
(kits.simguests.CopyCounter) and fails a test on any instant with two.

- Switchover without `to` goes to the best other member; to a faulted member it fails,
  saying why.
- The operator SIGKILLed right after it ordered a failover's online: restarted, it
  completes the failover, counted once, with a higher epoch.
- Two operator replicas: one acts, the other's log shows no action; the leader
  SIGKILLed, the other takes over (a higher epoch) and carries out the next failover.
- A 2-member cluster: either member lost, the group survives on the other, thanks to the
  operator's vote.
- A VMI force-deleted (finalizer removed) on a node that stopped answering, its guest
  running on: the vanished VMI is no proof; the group moves only once the member's agent
  self-fenced (quorum-lease bound), never while its copy runs.
- A node that stopped answering with its guest cut off: online elsewhere only after the
  quorum-lease bound.
- A member the operator cannot reach while its peers hear it: not fenced, nothing moves.
  A member its peers lose while the operator reaches it: not fenced either (asked
  directly); it self-fences for want of quorum and its group moves, one copy at a time.

Every cluster lives in a namespace of its own; the node faults are undone whatever
happens (the nodes are shared with the rest of the session).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubevirtkit import FAULT, Namespace

from guestha.model.agentconfig import offline_budget_seconds
from guestha.protocol.config import GroupConfig
from kits import simguests
from kits.sgstatus import group, online_on, pids_in_guest, reasons, state_on, vm
from testbed.processes import alive

pytestmark = pytest.mark.controlplane

OPERATOR = "guestha-operator"
SECOND = "guestha-operator-2"
TIMEOUT = 90.0
HEARTBEAT_MS, PEER_TIMEOUT_MS, SELF_FENCE_S = 200, 1000, 3
APP_TIMEOUTS = {"offlineSeconds": 2, "cleanSeconds": 2}
APP_MONITOR = {"intervalSeconds": 1, "timeoutSeconds": 1}
# The agents' offline budget is part of the quorum-lease bound: the operator derives it
# from the groups' timeouts (6 s here); a bound wait allows the whole bound twice.
OFFLINE_TIMEOUT_S = offline_budget_seconds([GroupConfig.from_dict({
    "name": "shop", "type": "Failover", "resources": [
        {"name": "app", "type": "Process", "attributes": {"command": ["/bin/true"]},
         "timeouts": APP_TIMEOUTS, "monitor": APP_MONITOR}]}, "shop")])
LEASE_WAIT = 2.0 * (PEER_TIMEOUT_MS / 1000 + SELF_FENCE_S + OFFLINE_TIMEOUT_S + 15) + 30
OPERATOR_LEASE_WAIT = 90.0  # a killed leader's Lease (15 s) expires, the other takes it


@dataclass
class Cluster:
    """One InGuestCluster with one Failover group "shop" running one Process resource
    whose command line carries `marker`, and the copy counter watching it."""

    ns: Namespace
    name: str
    members: tuple[str, ...]
    marker: bytes
    copies: simguests.CopyCounter
    state_dir: Any

    def app_pids(self, member: str) -> list[int]:
        uid = self.ns.running(member)["metadata"]["uid"]
        return pids_in_guest(self.state_dir, uid, self.marker)

    def app_pid(self, member: str) -> int:
        pids = self.app_pids(member)
        assert len(pids) == 1, f"{member}: application pids {pids}"
        return pids[0]

    def cluster_status(self) -> dict[str, Any]:
        return dict((self.ns.get("igc", self.name) or {}).get("status") or {})

    def clear(self) -> None:
        """Clear every fault of the group and wait until no member shows one."""
        self.ns.kubectl("annotate", "sg", "shop", f"guestha.io/clear={uuid.uuid4().hex[:8]}",
                        "--overwrite")
        self.ns.wait_for("no member Faulted", lambda: states_ok(self.ns))


def states_ok(ns: Namespace) -> bool:
    found = {m["name"]: m["state"] for m in group(ns).get("members", ())}
    return bool(found) and "Faulted" not in found.values()


def shop(cluster: str, members: tuple[str, ...], marker: str) -> dict[str, Any]:
    return {
        "apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
        "metadata": {"name": "shop"},
        "spec": {
            "cluster": cluster, "type": "Failover",
            "systems": [{"member": m, "priority": i} for i, m in enumerate(members)],
            "resources": [{"name": "app", "type": "Process", "restartLimit": 0,
                           "monitor": APP_MONITOR, "timeouts": APP_TIMEOUTS,
                           "attributes": {"command": ["/bin/sleep", "86400", marker]}}],
        },
    }


@contextlib.contextmanager
def make_cluster(kube: Any, simulator: Any, prefix: str, count: int) -> Iterator[Cluster]:
    """A namespace with its cluster (members `<prefix>-a`, `-b`, ...), the group online on
    the first member; everything deleted at the end, and the copy counter checked."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    ns = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    members = tuple(f"{prefix}-{chr(ord('a') + i)}" for i in range(count))
    marker = f"0.{random.randrange(10**8, 10**9)}"
    try:
        with simguests.CopyCounter(marker.encode()) as copies:
            ns.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
                      "metadata": {"name": prefix},
                      "spec": {"members": [{"name": m} for m in members],
                               "heartbeat": {"intervalMilliseconds": HEARTBEAT_MS,
                                             "peerTimeoutMilliseconds": PEER_TIMEOUT_MS},
                               "fencing": {"policy": "KubeVirt",
                                           "selfFenceTimeoutSeconds": SELF_FENCE_S,
                                           "watchdog": False}}})
            for member in members:
                ns.apply(vm(member))
            ns.apply(shop(prefix, members, marker))
            cluster = Cluster(ns, prefix, members, marker.encode(), copies,
                              simulator.state_dir)
            online_on(ns, members[:1])
            yield cluster
        copies.check()
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=true", "--timeout=90s",
                     check=False)


def ready(ns: Namespace, node: str) -> str:
    return next((c["status"] for c in ns.node(node)["status"]["conditions"]
                 if c["type"] == "Ready"), "")


@contextlib.contextmanager
def silent_node(ns: Namespace, node: str) -> Iterator[None]:
    """The node stops answering (kubelet and virt-handler silent; its guests run on)
    until the block ends; returns once the node lifecycle controller marked it
    Ready=Unknown, and ends once it is Ready again."""
    ns.kube.kubectl("annotate", "node", node, f"{FAULT}=Unresponsive", "--overwrite")
    try:
        ns.wait_for(f"node {node} Ready=Unknown", lambda: ready(ns, node) == "Unknown", 60)
        yield
    finally:
        ns.kube.kubectl("annotate", "node", node, f"{FAULT}-")
    ns.wait_for(f"node {node} Ready again", lambda: ready(ns, node) == "True", 60)


def online_elsewhere(ns: Namespace, not_on: str, timeout: float | None = None
                     ) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = group(ns)
        on = status.get("onlineOn") or []
        return status if status.get("state") == "Online" and on and not_on not in on else None
    try:
        found: dict[str, Any] = ns.wait_for(f"shop online elsewhere than {not_on}", check,
                                            timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; status: {group(ns)}") from None
    return found


def log_from(kube: Any, name: str, offset: int) -> str:
    path = kube.local.log_of(name)
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_size(kube: Any, name: str) -> int:
    path = kube.local.log_of(name)
    return path.stat().st_size if path.exists() else 0


def wait_log(kube: Any, name: str, offset: int, text: str, timeout: float) -> None:
    """Until `text` appears in the log of process `name` past `offset`; polled every
    2 ms, so that a test can act right after the operator logged something."""
    deadline = time.monotonic() + timeout
    while text not in log_from(kube, name, offset):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not log {text!r} within {timeout:.0f}s")
        time.sleep(0.002)


def needs_local(kube: Any) -> None:
    if kube.local is None:
        pytest.skip("needs the local control plane (the operator runs as its process)")


@pytest.fixture(scope="module")
def main(kube: Any, simulator: Any, operator: Any) -> Iterator[Cluster]:
    """A 3-member cluster shared, in order, by the Switchover, operator-kill and
    two-replica scenarios (each starts from where the one before left the group)."""
    with make_cluster(kube, simulator, "sv", 3) as cluster:
        yield cluster


# -- Switchover


def test_a_switchover_without_a_target_goes_to_the_best_other_member(main: Cluster) -> None:
    a, b, _ = main.members
    main.ns.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "Switchover",
                   "metadata": {"name": "anywhere"}, "spec": {"serviceGroup": "shop"}})
    done = main.ns.wait_for("the switchover to finish", lambda: (
        main.ns.get("switchover", "anywhere") or {}).get("status", {}).get("phase")
        in ("Succeeded", "Failed") and main.ns.get("switchover", "anywhere"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # priority 1 is the best of the others (0 is where it ran)
    assert (done["status"]["from"], done["status"]["to"]) == (a, b)
    online_on(main.ns, (b,))


def test_a_switchover_to_a_faulted_member_fails_saying_why(main: Cluster) -> None:
    a, b, _ = main.members
    os.kill(main.app_pid(b), signal.SIGKILL)  # restartLimit 0: faulted on b at once
    online_on(main.ns, (a,))
    state_on(main.ns, b, ("Faulted",))
    main.ns.apply({"apiVersion": "guestha.io/v1alpha1", "kind": "Switchover",
                   "metadata": {"name": "to-faulted"},
                   "spec": {"serviceGroup": "shop", "to": b}})
    done = main.ns.wait_for("the switchover to finish", lambda: (
        main.ns.get("switchover", "to-faulted") or {}).get("status", {}).get("phase")
        in ("Succeeded", "Failed") and main.ns.get("switchover", "to-faulted"))
    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["reason"] == "TargetFaulted"
    assert b in done["status"]["message"] and "faulted" in done["status"]["message"]
    assert "SwitchoverFailed" in reasons(main.ns, "to-faulted")
    assert group(main.ns)["onlineOn"] == [a]  # nothing moved


# -- the operator killed


def test_an_operator_killed_mid_failover_completes_it_once_restarted(
        main: Cluster, kube: Any) -> None:
    """SIGKILLed right after it logged the failover's online command (the agent may or
    may not have it yet); restarted, it finishes the failover, never counts it twice,
    and acts with a higher epoch."""
    needs_local(kube)
    a, b, _ = main.members
    main.clear()
    before = online_on(main.ns, (a,))
    epoch = main.cluster_status()["epoch"]
    offset = log_size(kube, OPERATOR)
    os.kill(main.app_pid(a), signal.SIGKILL)  # restartLimit 0: fails over to b
    try:
        wait_log(kube, OPERATOR, offset, f"{main.ns.name}/{main.name}: online shop on {b}", 30)
    finally:
        kube.local.kill_process(OPERATOR)
    try:
        time.sleep(1.0)  # whatever the agents do meanwhile, nobody can order anything
        assert len(simguests.copies(main.marker)) <= 1
    finally:
        kube.local.start_operator(timeout=120)
    status = online_on(main.ns, (b,), timeout=TIMEOUT + OPERATOR_LEASE_WAIT)
    # counted by the killed one or by its successor (if the status it wrote said where
    # the group was), never twice
    assert int(status.get("failovers") or 0) <= int(before.get("failovers") or 0) + 1
    main.ns.wait_for("the new leader's epoch in status",
                     lambda: main.cluster_status().get("epoch", 0) > epoch)


def test_a_fault_while_no_operator_runs_is_failed_over_and_counted_by_the_next(
        main: Cluster, kube: Any) -> None:
    """The application faults while the operator is down (SIGKILLed): the agent only
    stops it (rule 3); the restarted operator fails the group over and counts it, from
    the status its predecessor wrote."""
    needs_local(kube)
    a, b, _ = main.members
    main.clear()
    before = online_on(main.ns, (b,))
    kube.local.kill_process(OPERATOR)
    try:
        os.kill(main.app_pid(b), signal.SIGKILL)  # restartLimit 0: faulted on b
        main.ns.wait_for("the agent to stop it", lambda: not simguests.copies(main.marker))
        time.sleep(2.0)
        assert not simguests.copies(main.marker)  # nobody onlines it without the operator
    finally:
        kube.local.start_operator(timeout=120)
    status = online_on(main.ns, (a,), timeout=TIMEOUT + OPERATOR_LEASE_WAIT)
    assert status["failovers"] == int(before.get("failovers") or 0) + 1, status
    assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == (b, a)
    assert status["lastFailover"]["reason"] == "ResourceFaulted"


def test_two_operator_replicas_one_acts_and_the_other_takes_over_when_it_dies(
        main: Cluster, kube: Any) -> None:
    needs_local(kube)
    local = kube.local
    main.clear()
    holder = group(main.ns)["onlineOn"][0]
    # by priority: the first failover to the best other member, the second to the last
    first, second_target = (m for m in main.members if m != holder)
    epoch = main.cluster_status()["epoch"]
    offset = log_size(kube, SECOND)
    first_offset = log_size(kube, OPERATOR)
    act = f"{main.ns.name}/{main.name}: "
    try:
        local.start_operator(name=SECOND, timeout=120)
        time.sleep(5.0)  # its supervisors start and follow the agents
        # a failover with both running: the first (the Lease holder) carries it out
        os.kill(main.app_pid(holder), signal.SIGKILL)
        online_on(main.ns, (first,))
        assert main.cluster_status()["epoch"] == epoch
        assert f"{act}online shop on {first}" in log_from(kube, OPERATOR, first_offset)
        second = log_from(kube, SECOND, offset)
        assert "leadership: leading" not in second, second[-3000:]
        for verb in ("online", "offline", "clean", "fencing"):
            assert f"{act}{verb} " not in second, second[-3000:]
        # the leader dies: the second replica takes over and carries out the next one
        local.kill_process(OPERATOR)
        os.kill(main.app_pid(first), signal.SIGKILL)  # faulted too: one member is left
        status = online_on(main.ns, (second_target,), timeout=TIMEOUT + OPERATOR_LEASE_WAIT)
        assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == (
            first, second_target)
        second = log_from(kube, SECOND, offset)
        assert "leadership: leading" in second
        assert f"{act}online shop on {second_target}" in second
        main.ns.wait_for("the second replica's higher epoch in status",
                         lambda: main.cluster_status().get("epoch", 0) > epoch)
    finally:
        # the session's operator back first (its start points the webhook at it), then
        # the second replica stopped cleanly (it releases the Lease)
        local.start_operator(timeout=120)
        local.stop_process(SECOND)


# -- two members and the operator's vote


def run_strategy(ns: Namespace, member: str, strategy: str) -> None:
    ns.kubectl("patch", "vm", member, "--type=merge",
               "-p", f'{{"spec": {{"runStrategy": "{strategy}"}}}}')


def test_a_two_member_cluster_survives_the_loss_of_either_member(
        kube: Any, simulator: Any, operator: Any) -> None:
    """A member lost for good (its guest crashed, its VM on runStrategy Manual, so
    KubeVirt does not restart it): the other holds quorum with the operator's vote (2 of
    3) past the self-fence timeout, and keeps or takes the group."""
    with make_cluster(kube, simulator, "duo", 2) as duo:
        a, b = duo.members
        ns = duo.ns
        held = duo.app_pid(a)
        # the standby lost: a keeps its group
        standby = ns.running(b)
        run_strategy(ns, b, "Manual")
        simguests.crash(simulator.state_dir, standby["metadata"]["uid"])
        ns.wait_for(f"{b}'s VMI down", lambda: (ns.get("vmi", b) or {}).get(
            "status", {}).get("phase") in ("Failed", "Succeeded", None))
        time.sleep(2 * (PEER_TIMEOUT_MS / 1000 + SELF_FENCE_S) + 2)  # past any self-fence
        assert duo.app_pid(a) == held and group(ns)["onlineOn"] == [a]
        assert held in simguests.copies(duo.marker)
        # b back (a new VMI), then the holder lost: b takes the group
        ns.kubectl("delete", "vmi", b, "--wait=true", check=False)
        run_strategy(ns, b, "Always")
        ns.running(b, other_than=standby["metadata"]["uid"])
        state_on(ns, b, ("Offline",))
        holder = ns.running(a)
        run_strategy(ns, a, "Manual")
        simguests.crash(simulator.state_dir, holder["metadata"]["uid"])
        status = online_on(ns, (b,))
        assert status["lastFailover"]["reason"] == "MemberLost"
        moved = duo.app_pid(b)
        time.sleep(2 * (PEER_TIMEOUT_MS / 1000 + SELF_FENCE_S) + 2)
        assert group(ns)["onlineOn"] == [b] and duo.app_pids(b) == [moved]


# -- a node that stops answering


def test_a_vmi_force_deleted_on_a_silent_node_is_no_proof_the_group_waits_for_the_self_fence(
        kube: Any, simulator: Any, operator: Any) -> None:
    with make_cluster(kube, simulator, "fd", 3) as fd:
        a = fd.members[0]
        ns = fd.ns
        old = ns.running(a)
        uid, node = old["metadata"]["uid"], old["status"]["nodeName"]
        pid = fd.app_pid(a)
        init = int(str(simguests.guest_record(simulator.state_dir, uid)["init_pid"]))
        with silent_node(ns, node):
            ns.kubectl("delete", "vmi", a, "--wait=false")
            ns.kubectl("patch", "vmi", a, "--type=json",
                       "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
            ns.gone("vmi", a, uid)
            deleted = time.time()
            assert alive(init) and pid in simguests.copies(fd.marker)  # the guest runs on
            status = online_elsewhere(ns, a, LEASE_WAIT)
            moved = status["onlineOn"][0]
            assert (status["lastFailover"]["from"], status["lastFailover"]["to"]) == (a, moved)
            # the old copy went by itself (its agent self-fenced: the guest still runs)
            # before the new one started
            assert pid not in simguests.copies(fd.marker)
            assert alive(init), "the old guest died: no self-fence shown"
            newer = [p for p in fd.copies.pids_since(deleted) if p != pid]
            assert newer, "no new copy seen"
            assert fd.copies.seen[pid][1] < fd.copies.seen[newer[0]][0]
        # the node answers again: it powers off the orphaned guest; the member's new run
        # joins as a standby
        ns.wait_for("the orphaned guest powered off", lambda: not alive(init), 60)
        state_on(ns, a, ("Offline",))
        assert group(ns)["onlineOn"] == [moved]


def test_a_vmi_force_deleted_while_no_operator_runs_is_no_proof_for_the_next_one(
        kube: Any, simulator: Any, operator: Any) -> None:
    """The same force deletion, done while the operator is down: the operator that
    starts next never saw the old run, yet the member's new run (its new VMI's agent,
    which knows nothing of the group) must not speak for the member while the old
    guest may still run the group."""
    needs_local(kube)
    with make_cluster(kube, simulator, "fdr", 3) as fd:
        a = fd.members[0]
        ns = fd.ns
        old = ns.running(a)
        uid, node = old["metadata"]["uid"], old["status"]["nodeName"]
        pid = fd.app_pid(a)
        with silent_node(ns, node):
            kube.local.kill_process(OPERATOR)
            try:
                ns.kubectl("delete", "vmi", a, "--wait=false")
                ns.kubectl("patch", "vmi", a, "--type=json",
                           "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
                ns.gone("vmi", a, uid)
                deleted = time.time()
                assert pid in simguests.copies(fd.marker)  # the guest runs on
            finally:
                kube.local.start_operator(timeout=120)
            # the new VMI (the webhook answers again) boots; wait until the group is
            # settled online somewhere, then past any self-fence of the old guest
            ns.wait_for("shop online", lambda: group(ns).get("state") == "Online"
                        and pid not in simguests.copies(fd.marker),
                        TIMEOUT + OPERATOR_LEASE_WAIT + LEASE_WAIT)
            newer = [p for p in fd.copies.pids_since(deleted) if p != pid]
            assert newer, "no new copy seen"
            assert fd.copies.seen[pid][1] < fd.copies.seen[newer[0]][0], (
                "a new copy started while the old guest still ran one")
        ns.wait_for(f"{a} back as a standby or holder", lambda: states_of(ns).get(a)
                    in ("Offline", "Online"), TIMEOUT)


def states_of(ns: Namespace) -> dict[str, str]:
    return {m["name"]: m["state"] for m in group(ns).get("members", ())}


def test_a_silent_node_with_its_guest_cut_off_moves_the_group_only_after_the_lease_bound(
        kube: Any, simulator: Any, operator: Any) -> None:
    with make_cluster(kube, simulator, "cut", 3) as cut:
        a = cut.members[0]
        ns = cut.ns
        vmi = ns.running(a)
        uid, node = vmi["metadata"]["uid"], vmi["status"]["nodeName"]
        pid = cut.app_pid(a)
        veth = str(simguests.guest_record(simulator.state_dir, uid)["veth"])
        fenced = reasons(ns, cut.name).count("FenceRequested")
        with silent_node(ns, node):
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)
            cut_at = time.time()
            try:
                status = online_elsewhere(ns, a, LEASE_WAIT)
            finally:
                subprocess.run(["ip", "link", "set", veth, "up"], check=False)
            moved = status["onlineOn"][0]
            newer = [p for p in cut.copies.pids_since(cut_at) if p != pid]
            assert newer, "no new copy seen"
            started = cut.copies.seen[newer[0]][0]
            # never before the bound: the agent's self-fence timeout and its offline
            # budget after the cut (the peer timeout and the margin on top are slack
            # for when the operator last heard it)
            assert started - cut_at >= SELF_FENCE_S + OFFLINE_TIMEOUT_S, (
                f"online elsewhere {started - cut_at:.1f}s after the cut")
            assert cut.copies.seen[pid][1] < started  # self-fenced long before
            assert reasons(ns, cut.name).count("FenceRequested") == fenced  # no node to ask
        ns.wait_for(f"{a} back", lambda: group(ns).get("members") and any(
            m["name"] == a and m["state"] == "Offline" for m in group(ns)["members"]))
        assert group(ns)["onlineOn"] == [moved]


@contextlib.contextmanager
def unreachable_from(state_dir: Any, uid: str, addresses: list[str]) -> Iterator[None]:
    """The guest of VMI `uid` can no longer send to `addresses` (blackhole routes in its
    network namespace) until the block ends; everything else it reaches as before."""
    netns = str(simguests.guest_record(state_dir, uid)["netns"])
    for address in addresses:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "route", "add", "blackhole",
                        f"{address}/32"], check=True)
    try:
        yield
    finally:
        for address in addresses:
            subprocess.run(["ip", "netns", "exec", netns, "ip", "route", "del", "blackhole",
                            f"{address}/32"], check=False)


OPERATOR_HOST = "10.213.0.1"  # the simulator's bridge: where the operator reaches guests from


def test_a_member_the_operator_cannot_reach_but_its_peers_hear_is_not_fenced(
        kube: Any, simulator: Any, operator: Any) -> None:
    """Operator-side trouble (its network to one guest): the member's agent does not
    answer the operator, but its peers keep hearing its heartbeats. It is not lost (the
    engine counts a silence from the last time anyone heard it): nothing is fenced and
    the group stays where it runs, its application never restarted."""
    with make_cluster(kube, simulator, "far", 3) as far:
        a = far.members[0]
        ns = far.ns
        uid = ns.running(a)["metadata"]["uid"]
        pid = far.app_pid(a)
        fenced = reasons(ns, far.name).count("FenceRequested")
        with unreachable_from(simulator.state_dir, uid, [OPERATOR_HOST]):
            ns.wait_for(f"{a}'s agent Disconnected in the cluster's status", lambda: any(
                m.get("name") == a and m.get("agent") == "Disconnected"
                for m in far.cluster_status().get("members", ())), 60)
            time.sleep(3 * PEER_TIMEOUT_MS / 1000 + SELF_FENCE_S)  # past every bound
            assert reasons(ns, far.name).count("FenceRequested") == fenced
            assert group(ns)["onlineOn"] == [a]
            assert far.app_pids(a) == [pid]
        ns.wait_for(f"{a}'s agent Connected again", lambda: any(
            m.get("name") == a and m.get("agent") == "Connected"
            for m in far.cluster_status().get("members", ())), 60)
        assert group(ns)["onlineOn"] == [a] and far.app_pids(a) == [pid]


def test_a_member_its_peers_lose_but_the_operator_reaches_is_not_fenced(
        kube: Any, simulator: Any, operator: Any) -> None:
    """The reverse: the guests' network cuts one member off from its peers while the
    operator still reaches it. The peers report it Down, the operator asks it directly
    (controller/probes.py), it answers: not lost, never fenced. Alone with the operator's
    vote it has no quorum: it self-fences (its group goes offline there) and the group
    comes online on another member, one copy at a time."""
    with make_cluster(kube, simulator, "near", 3) as near:
        a = near.members[0]
        ns = near.ns
        uid = ns.running(a)["metadata"]["uid"]
        peers = [str(simguests.guest_record(simulator.state_dir,
                                            ns.running(m)["metadata"]["uid"])["address"])
                 for m in near.members[1:]]
        fenced = reasons(ns, near.name).count("FenceRequested")
        with unreachable_from(simulator.state_dir, uid, peers):
            status = online_elsewhere(ns, a, LEASE_WAIT)
            assert reasons(ns, near.name).count("FenceRequested") == fenced
            assert not near.app_pids(a)
            assert any(m.get("name") == a and m.get("agent") == "Connected"
                       for m in near.cluster_status().get("members", ()))
        assert status["onlineOn"] != [a]
