"""Issue 16 item 3: an operator with a newer agent bundle rolls it out to a running
cluster one member at a time, without moving anything.

A 3-member cluster whose agents the operator's webhook injected, a Failover group (a
Process) Online on its first member and a Parallel group (a Process) Online everywhere,
at a 1 s peer timeout: an agent's restart (about 2.5 s) is longer, so the members' peers
and the operator do lose it for a moment; the operator must not fence or fail over for
it (the rollout hands the restarting member's silence to the engine as a live
migration's), and the peers keep quorum without it. The operator is restarted with a
newer bundle (the test hook GUESTHA_TEST_BUNDLE_VERSION: the same sources, another
version). With spec.agent.upgrade Manual nothing happens (AgentsUpToDate False, Paused);
set to Automatic, every agent comes to report the new version, one member at a time, and
the applications' processes never changed: no failover, no fencing, never two copies.

Then a bundle that exits at start (GUESTHA_TEST_BUNDLE_CRASH): the first member's agent
rolls it back, the operator says so (Event AgentUpgradeFailed, AgentsUpToDate False,
UpgradeFailed, in the agent's words) and sends it to no other member, while the groups'
status, polled throughout, never shows them anywhere else.

And an operator SIGKILLed right after it sent a member the bundle, that member silent until
the next operator leads: the next one reads status.agentUpgrade, does not fence it, and
goes on one member at a time.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubevirtkit import Namespace

from kits import simguests
from kits.sgstatus import fast_cluster, online_on, vm

pytestmark = pytest.mark.controlplane

CLUSTER = "roll"
MEMBERS = ("roll-a", "roll-b", "roll-c")
MARKER = f"0.{random.randrange(10**8, 10**9)}"
LOGS_MARKER = f"0.{random.randrange(10**8, 10**9)}"
VERSION = f"rollout-test-{uuid.uuid4().hex[:8]}"
OPERATOR = "guestha-operator"
TIMEOUT = 120.0


def needs_local(kube: Any) -> None:
    if kube.local is None:
        pytest.skip("restarts the operator: only on the local control plane")


def shop() -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": "shop"},
            "spec": {"cluster": CLUSTER, "type": "Failover",
                     "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
                     "resources": [{"name": "app", "type": "Process",
                                    "monitor": {"intervalSeconds": 1},
                                    "attributes": {"command": ["/bin/sleep", "86400",
                                                               MARKER]}}]}}


def logs() -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": "logs"},
            "spec": {"cluster": CLUSTER, "type": "Parallel",
                     "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
                     "resources": [{"name": "shipper", "type": "Process",
                                    "monitor": {"intervalSeconds": 1},
                                    "attributes": {"command": ["/bin/sleep", "86400",
                                                               LOGS_MARKER]}}]}}


def in_guest_cluster(upgrade: str) -> dict[str, Any]:
    return fast_cluster(CLUSTER, MEMBERS, agent={"upgrade": upgrade})


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    needs_local(kube)
    name = f"rollout-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=TIMEOUT, interval=0.2)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
        # the rest of the session runs with the operator's own bundle again
        kube.local.stop_process(OPERATOR)
        kube.local.start_operator(timeout=120)


@pytest.fixture(scope="module")
def copies() -> Iterator[simguests.CopyCounter]:
    with simguests.CopyCounter(MARKER.encode()) as counter:
        yield counter
    counter.check()


def cluster_status(ns: Namespace) -> dict[str, Any]:
    return dict((ns.get("igc", CLUSTER) or {}).get("status") or {})


def versions(ns: Namespace) -> dict[str, str | None]:
    return {m["name"]: m.get("agentVersion") for m in cluster_status(ns).get("members") or ()}


def up_to_date(ns: Namespace) -> dict[str, Any]:
    return next((c for c in cluster_status(ns).get("conditions") or ()
                 if c["type"] == "AgentsUpToDate"), {})


def pids(marker: str) -> list[int]:
    return sorted(simguests.copies(marker.encode()))


def test_a_newer_bundle_is_rolled_out_one_member_at_a_time_moving_nothing(
        ns: Namespace, kube: Any, copies: simguests.CopyCounter) -> None:
    ns.apply(in_guest_cluster("Manual"))
    for member in MEMBERS:
        ns.apply(vm(member))
    ns.apply(shop())
    ns.apply(logs())
    online_on(ns, (MEMBERS[0],))
    online_on(ns, MEMBERS, "logs")
    ns.wait_for("every agent's version in status",
                lambda: len(set(versions(ns).values()) - {None}) == 1
                and len(versions(ns)) == 3)
    old = versions(ns)[MEMBERS[0]]
    assert up_to_date(ns).get("status") == "True", cluster_status(ns)
    app, shippers = pids(MARKER), pids(LOGS_MARKER)
    assert len(app) == 1 and len(shippers) == 3
    before = cluster_status(ns)
    shop_before = (ns.get("sg", "shop") or {}).get("status") or {}

    # an operator with a newer bundle; Manual: it only says so
    offset = kube.local.log_of(OPERATOR).stat().st_size
    kube.local.stop_process(OPERATOR)
    kube.local.start_operator(timeout=120, env={"GUESTHA_TEST_BUNDLE_VERSION": VERSION})
    paused = ns.wait_for("AgentsUpToDate False, Paused",
                         lambda: up_to_date(ns) if up_to_date(ns).get("reason") == "Paused"
                         else None)
    assert paused["status"] == "False" and VERSION in paused["message"]
    time.sleep(2.0)
    assert set(versions(ns).values()) == {old}

    # Automatic: every member upgraded, one at a time
    started = time.monotonic()
    ns.apply(in_guest_cluster("Automatic"))
    done = ns.wait_for("AgentsUpToDate True",
                       lambda: up_to_date(ns) if up_to_date(ns).get("status") == "True"
                       and up_to_date(ns).get("reason") == "UpToDate" else None,
                       timeout=TIMEOUT)
    took = time.monotonic() - started
    assert VERSION in done["message"]
    assert versions(ns) == {m: VERSION for m in MEMBERS}

    # nothing moved: the same processes, where they were; no failover, no fencing
    assert pids(MARKER) == app and pids(LOGS_MARKER) == shippers
    shop_after = online_on(ns, (MEMBERS[0],))
    online_on(ns, MEMBERS, "logs")
    assert int(shop_after.get("failovers") or 0) == int(shop_before.get("failovers") or 0)
    after = cluster_status(ns)
    assert int(after.get("fencings") or 0) == int(before.get("fencings") or 0)
    reasons = [e["reason"] for e in ns.events(CLUSTER)]
    assert reasons.count("AgentUpgraded") == 3, reasons
    assert "AgentUpgradeFailed" not in reasons and "Fenced" not in reasons
    # one member at a time: each upgrade began only after the one before was done
    log = kube.local.log_of(OPERATOR).read_bytes()[offset:].decode(errors="replace")
    steps = re.findall(rf"{ns.name}/{CLUSTER}: (?:upgrading (\S+) from agent|(\S+) runs "
                       rf"agent {VERSION} \(was)", log)
    order = [("start", a) if a else ("done", b) for a, b in steps]
    assert [kind for kind, _ in order] == ["start", "done"] * 3, order
    assert sorted(m for kind, m in order if kind == "done") == sorted(MEMBERS)
    # members without the Failover group first: its home restarts last
    assert order[-1] == ("done", MEMBERS[0]), order
    print(f"rollout of 3 members: {took:.1f} s")


# -- helpers of the tests that follow: they start from any rolled-out state (every member
# running one version, the groups where the first test put them)

def restart_operator(kube: Any, version: str, **env: str) -> int:
    """The operator stopped and started again with a bundle of `version` (and more test
    hooks); returns where its log continues."""
    offset = kube.local.log_of(OPERATOR).stat().st_size
    kube.local.stop_process(OPERATOR)
    kube.local.start_operator(timeout=120,
                              env={"GUESTHA_TEST_BUNDLE_VERSION": version, **env})
    return offset


def operator_log(kube: Any, offset: int) -> str:
    return kube.local.log_of(OPERATOR).read_bytes()[offset:].decode(errors="replace")


def upgrades_started(ns: Namespace, log: str, version: str) -> list[str]:
    """The members the operator sent a bundle of `version` to, in order."""
    return re.findall(rf"{ns.name}/{CLUSTER}: upgrading (\S+) from agent \S+ to "
                      rf"{re.escape(version)}\b", log)


class Steady:
    """Samples, at every call, where the groups are and what each member's status says
    of them; remembers every sample where they are not as the first test left them:
    shop Online on the first member only, logs Online on every member."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.samples = 0
        self.moved: list[tuple[str, Any]] = []

    def __call__(self) -> None:
        self.samples += 1
        for name, where in (("shop", [MEMBERS[0]]), ("logs", sorted(MEMBERS))):
            status = (self.ns.get("sg", name) or {}).get("status") or {}
            on = {m["name"]: m.get("state") for m in status.get("members") or ()}
            if status.get("state") != "Online" or sorted(status.get("onlineOn") or ()) \
                    != where or any(on.get(m) != "Online" for m in where):
                self.moved.append((name, status))


def test_a_bundle_that_does_not_come_up_is_rolled_back_and_stops_the_rollout(
        ns: Namespace, kube: Any, copies: simguests.CopyCounter) -> None:
    """The operator's newer bundle exits at start (GUESTHA_TEST_BUNDLE_CRASH): the first
    member's agent tries it, rolls it back and runs its old version on; the operator
    says which member and which version failed (Event, condition), sends the bundle to
    no other member, and nothing moved or was fenced meanwhile."""
    online_on(ns, (MEMBERS[0],))
    online_on(ns, MEMBERS, "logs")
    old = versions(ns)
    assert len(set(old.values())) == 1 and None not in old.values(), old
    app, shippers = pids(MARKER), pids(LOGS_MARKER)
    before = cluster_status(ns)
    shop_before = (ns.get("sg", "shop") or {}).get("status") or {}
    broken = f"broken-{uuid.uuid4().hex[:8]}"
    steady = Steady(ns)

    offset = restart_operator(kube, broken, GUESTHA_TEST_BUNDLE_CRASH="crashes at start")

    def failed() -> dict[str, Any] | None:
        steady()
        condition = up_to_date(ns)
        return condition if condition.get("reason") == "UpgradeFailed" else None

    condition = ns.wait_for("AgentsUpToDate UpgradeFailed", failed, timeout=TIMEOUT)
    [member] = upgrades_started(ns, operator_log(kube, offset), broken)
    assert condition["status"] == "False"
    assert member in condition["message"] and broken in condition["message"], condition
    assert "did not come up" in condition["message"], condition
    warnings = [e["message"] for e in ns.events(CLUSTER)
                if e["reason"] == "AgentUpgradeFailed" and broken in e["message"]]
    assert len(warnings) == 1 and member in warnings[0], warnings
    # the member runs its old agent again, and says it rolled the new one back
    ns.wait_for(f"{member}'s agent back with its old version",
                lambda: steady() is None and versions(ns)[member] == old[member])
    # the rollout stopped there: for a while after, no other member is sent the bundle
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        steady()
        time.sleep(0.2)
    assert upgrades_started(ns, operator_log(kube, offset), broken) == [member]
    assert versions(ns) == old
    assert up_to_date(ns).get("reason") == "UpgradeFailed", up_to_date(ns)
    # nothing moved, stopped or fenced, at any sample
    assert steady.moved == [], steady.moved[:3]
    assert pids(MARKER) == app and pids(LOGS_MARKER) == shippers
    shop_after = (ns.get("sg", "shop") or {}).get("status") or {}
    assert int(shop_after.get("failovers") or 0) == int(shop_before.get("failovers") or 0)
    assert int(cluster_status(ns).get("fencings") or 0) == int(before.get("fencings") or 0)
    assert "Fenced" not in [e["reason"] for e in ns.events(CLUSTER)]
    print(f"{steady.samples} samples of the groups' status, all steady")


def test_an_upgrade_in_flight_survives_an_operator_restart(
        ns: Namespace, kube: Any, simulator: Any, copies: simguests.CopyCounter) -> None:
    """The operator is SIGKILLed right after it sent a member the newer bundle (its
    status.agentUpgrade written), and that member stays silent (its guest frozen, as a
    slow restart would be) until the next operator has taken the Lease and led past the
    peer timeout: the next operator reads the upgrade in flight, so it does not fence the
    member for its silence, waits for it, and goes on one member at a time."""
    online_on(ns, (MEMBERS[0],))
    online_on(ns, MEMBERS, "logs")
    assert len(set(versions(ns).values())) == 1, versions(ns)
    app, shippers = pids(MARKER), pids(LOGS_MARKER)
    before = cluster_status(ns)
    shop_before = (ns.get("sg", "shop") or {}).get("status") or {}
    newer = f"restart-{uuid.uuid4().hex[:8]}"
    # a killed operator's Lease (15 s) must run out before the next one leads: the
    # silence a restarting member is allowed (migration.maxPauseSeconds) covers that
    # While the operator is down and one member frozen, the other two hold 2 of 4 votes:
    # no quorum, and with a 3 s self-fence the member running shop took it offline
    # before the next operator's vote came (a fault of the test's making, under load)
    wide = {"migration": {"maxPauseSeconds": 60}}
    manual, automatic = in_guest_cluster("Manual"), in_guest_cluster("Automatic")
    for body in (manual, automatic):
        body["spec"].update(wide)
        body["spec"]["fencing"]["selfFenceTimeoutSeconds"] = 90
    ns.apply(manual)
    offset = restart_operator(kube, newer)
    ns.wait_for("AgentsUpToDate Paused", lambda: up_to_date(ns).get("reason") == "Paused")

    ns.apply(automatic)
    record = ns.wait_for("status.agentUpgrade",
                         lambda: cluster_status(ns).get("agentUpgrade"), interval=0.05)
    kube.local.kill_process(OPERATOR)
    member = record["member"]
    assert record["version"] == newer and record["previousVersion"] == versions(ns)[member]
    vmi = ns.get("vmi", member) or {}
    frozen = simguests.freeze(simulator.state_dir, vmi["metadata"]["uid"])
    try:
        restarted = kube.local.log_of(OPERATOR).stat().st_size
        kube.local.start_operator(timeout=120, env={"GUESTHA_TEST_BUNDLE_VERSION": newer})
        wait_for_log(kube, restarted, "leadership: leading", 60)
        time.sleep(3.0)  # three peer timeouts of leading with the member silent
        assert upgrades_started(ns, operator_log(kube, restarted), newer) == []
    finally:
        simguests.thaw(frozen)

    done = ns.wait_for("AgentsUpToDate True",
                       lambda: up_to_date(ns) if up_to_date(ns).get("status") == "True"
                       and up_to_date(ns).get("reason") == "UpToDate" else None,
                       timeout=TIMEOUT)
    # nothing fenced, moved or restarted
    after = cluster_status(ns)
    assert int(after.get("fencings") or 0) == int(before.get("fencings") or 0), after
    reasons = [e["reason"] for e in ns.events(CLUSTER)]
    assert "Fenced" not in reasons and "FenceRequested" not in reasons, reasons
    assert pids(MARKER) == app and pids(LOGS_MARKER) == shippers
    assert newer in done["message"] and versions(ns) == {m: newer for m in MEMBERS}
    assert "agentUpgrade" not in cluster_status(ns)
    log = operator_log(kube, offset)
    assert f"upgrade of {member} to agent {newer} in flight since" in log
    steps = re.findall(rf"{ns.name}/{CLUSTER}: (?:upgrading (\S+) from agent|(\S+) runs "
                       rf"agent {newer} \(was)", log)
    order = [("start", a) if a else ("done", b) for a, b in steps]
    # the member sent the bundle by the killed operator is done by the next one; then
    # the others, one at a time
    assert order[:2] == [("start", member), ("done", member)], order
    assert [kind for kind, _ in order] == ["start", "done"] * 3, order
    shop_after = online_on(ns, (MEMBERS[0],))
    online_on(ns, MEMBERS, "logs")
    assert int(shop_after.get("failovers") or 0) == int(shop_before.get("failovers") or 0)


def wait_for_log(kube: Any, offset: int, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in operator_log(kube, offset):
        assert time.monotonic() < deadline, f"{text!r} not in the operator's log"
        time.sleep(0.2)
