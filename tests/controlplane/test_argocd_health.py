"""Argo CD's view of guestha: the Lua health checks in argocd/ run on gopher-lua (the engine
Argo CD embeds) through hack/gotools/luahealth, first on their own test cases, then on
live objects of a real cluster (the simulator's guests, real agents, the operator) in each
state a user meets: a status not written yet, older than the spec, a group online,
frozen, faulted, switching, a Switchover running, done and failed, a member stopped.

The testdata of the checks are these very objects: with GUESTHA_ARGOCD_TESTDATA=1 this
module writes each object it evaluates into the kind's testdata/ folder (managedFields
left out), which is how they were made.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubevirtkit import Namespace

from kits import argocd
from kits.sgstatus import group, online_on, pids_in_guest, vm
from testbed import build

pytestmark = pytest.mark.controlplane

CLUSTER = "web"
MEMBERS = ("web-a", "web-b", "web-c")
MARKER = f"0.{random.randrange(10**8, 10**9)}"
CAPTURE = os.environ.get("GUESTHA_ARGOCD_TESTDATA") == "1"


# -- the runner and the shipped cases (no cluster needed)

def test_the_shipped_health_checks_pass_their_own_cases() -> None:
    result = argocd.run_checks(*(argocd.CHECKS / kind for kind in argocd.KINDS))
    assert result.returncode == 0, result.stdout + result.stderr
    cases = sum(len(yaml.safe_load((argocd.CHECKS / kind / "health_test.yaml").read_text())
                    ["tests"]) for kind in argocd.KINDS)
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ok"] * cases


def test_the_runner_fails_a_wrong_expectation(tmp_path: Path) -> None:
    folder = tmp_path / "Switchover"
    shutil.copytree(argocd.CHECKS / "Switchover", folder)
    cases = yaml.safe_load((folder / "health_test.yaml").read_text())
    wrong = next(c for c in cases["tests"] if c["healthStatus"]["status"] == "Healthy")
    wrong["healthStatus"]["status"] = "Degraded"
    (folder / "health_test.yaml").write_text(yaml.safe_dump(cases))
    result = argocd.run_checks(folder)
    assert result.returncode == 1
    assert f"FAIL {folder / wrong['inputPath']}: expected " \
           f'{{"status":"Degraded","message":' in result.stdout
    assert '"status":"Healthy"' in result.stdout
    assert "1 case(s) failed" in result.stdout


def test_the_runner_reads_health_as_argo_cd_does(tmp_path: Path) -> None:
    """An unknown status word is Unknown with Argo CD's message; the string library is not
    open (scripts installed through argocd-cm run without it), so a check that used it
    fails here as it would there."""
    odd = tmp_path / "odd.lua"
    odd.write_text('return {status = "Fine", message = "x"}\n')
    assert argocd.health("Switchover", {}, odd) == {
        "status": "Unknown", "message": "Lua returned an invalid health status"}
    numbers = tmp_path / "numbers.lua"
    numbers.write_text('return {status = "Healthy", message = "g" .. obj.metadata.generation}\n')
    assert argocd.health("Switchover", {"metadata": {"generation": 3}}, numbers) == {
        "status": "Healthy", "message": "g3"}
    strings = tmp_path / "strings.lua"
    strings.write_text('return {status = string.upper("healthy")}\n')
    with pytest.raises(AssertionError, match="string"):
        argocd.health("Switchover", {}, strings)


# -- live objects


@pytest.fixture(scope="module")
def ns(kube: Any, simulator: Any, operator: Any) -> Iterator[Namespace]:
    name = f"argocd-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "guestha.io/injection=enabled")
    space = Namespace(kube, name, timeout=90.0, interval=0.2)
    try:
        yield space
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def cluster_spec() -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": CLUSTER},
            "spec": {"members": [{"name": m} for m in MEMBERS],
                     "heartbeat": {"intervalMilliseconds": 200, "peerTimeoutMilliseconds": 1000},
                     "fencing": {"policy": "KubeVirt", "selfFenceTimeoutSeconds": 3,
                                 "watchdog": False}}}


def shop() -> dict[str, Any]:
    """A Failover group whose application ignores SIGTERM and stops only at the SIGKILL
    3 s later: a Switchover of it is Running long enough to be seen."""
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": "shop"},
            "spec": {"cluster": CLUSTER, "type": "Failover",
                     "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
                     "resources": [{"name": "app", "type": "Process",
                                    "monitor": {"intervalSeconds": 1},
                                    "attributes": {
                                        "command": ["/bin/sh", "-c",
                                                    f"trap '' TERM; exec /bin/sleep 86400 "
                                                    f"{MARKER}"],
                                        "stopTimeoutSeconds": 3}}]}}


def solo() -> dict[str, Any]:
    """A group that stays where it faulted (autoFailover false, no restart in place)."""
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": "solo"},
            "spec": {"cluster": CLUSTER, "autoFailover": False,
                     "systems": [{"member": "web-a", "priority": 0},
                                 {"member": "web-b", "priority": 1}],
                     "resources": [{"name": "app", "type": "Process",
                                    "monitor": {"intervalSeconds": 1},
                                    "attributes": {"command": [
                                        "/bin/sleep", "86400", MARKER + "1"]}}]}}


def switchover(name: str, to: str) -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "Switchover",
            "metadata": {"name": name}, "spec": {"serviceGroup": "shop", "to": to}}


def check(kind: str, obj: dict[str, Any], name: str, expected: str) -> dict[str, str]:
    """The health of `obj` must be `expected`; under capture the object is kept as
    testdata/<name>.yaml."""
    found = argocd.health(kind, obj)
    assert found["status"] == expected, (found, json.dumps(obj.get("status"))[:3000])
    if CAPTURE:
        kept = json.loads(json.dumps(obj))
        kept["metadata"].pop("managedFields", None)
        path = argocd.CHECKS / kind / "testdata" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(kept, sort_keys=False, width=100))
    return found


def dry_run(ns: Namespace, obj: dict[str, Any]) -> dict[str, Any]:
    out = ns.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                     input=json.dumps(obj))
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def patched(ns: Namespace, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """The object as the patch's own answer shows it: the new generation, the status
    still of the one before (the operator has not seen it yet)."""
    out = ns.kubectl("patch", kind, name, "--type=merge", "-p", json.dumps(patch), "-o", "json")
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def live(ns: Namespace, kind: str, name: str) -> dict[str, Any]:
    found = ns.get(kind, name)
    assert found is not None
    return found


def healthy_cluster(ns: Namespace) -> dict[str, Any] | None:
    obj = live(ns, "igc", CLUSTER)
    return obj if argocd.health("InGuestCluster", obj)["status"] == "Healthy" else None


@pytest.fixture(scope="module")
def cluster(ns: Namespace) -> Namespace:
    assert check("InGuestCluster", dry_run(ns, cluster_spec()), "no-status",
                 "Progressing")["message"].startswith("Waiting for the guestha operator")
    assert check("ServiceGroup", dry_run(ns, shop()), "no-status", "Progressing")
    ns.apply(cluster_spec())
    for member in MEMBERS:
        ns.apply(vm(member))
    ns.apply(shop())
    online_on(ns, ("web-a",))
    ns.wait_for("the cluster Healthy", lambda: healthy_cluster(ns))
    return ns


def test_a_running_cluster_and_an_online_group_are_healthy(cluster: Namespace) -> None:
    check("InGuestCluster", live(cluster, "igc", CLUSTER), "healthy", "Healthy")
    found = check("ServiceGroup", live(cluster, "sg", "shop"), "online", "Healthy")
    assert found["message"] == "Online: online on web-a"


def test_a_status_older_than_the_spec_is_progressing(cluster: Namespace) -> None:
    obj = patched(cluster, "igc", CLUSTER, {"spec": {"migration": {"maxPauseSeconds": 31}}})
    assert obj["status"]["observedGeneration"] < obj["metadata"]["generation"]
    check("InGuestCluster", obj, "stale-generation", "Progressing")
    obj = patched(cluster, "sg", "shop", {"spec": {"faultExpirySeconds": 600}})
    check("ServiceGroup", obj, "stale-generation", "Progressing")
    online_on(cluster, ("web-a",))
    cluster.wait_for("the cluster Healthy again", lambda: healthy_cluster(cluster))


class Versions:
    """Every version of the objects one `kubectl get --watch` delivers, read in a thread of
    its own: a state shorter than any poll's interval (a switchover's Running lasts about
    the app's stop, some 0.1 s) is seen all the same. A top-level object ends with a
    line that is only "}" (kubectl's indented JSON)."""

    def __init__(self, ns: Namespace, *what: str) -> None:
        command = [str(build.binary("kubectl")), "--kubeconfig", str(ns.kube.kubeconfig),
                   "-n", ns.name, "get", *what, "-o", "json", "--watch"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.seen: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        lines: list[str] = []
        for line in self.proc.stdout:
            lines.append(line)
            if line.rstrip("\n") == "}":
                self.seen.append(json.loads("".join(lines)))
                lines.clear()

    def first(self, predicate: Any) -> dict[str, Any] | None:
        return next((v for v in list(self.seen) if predicate(v)), None)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._thread.join(10)


def test_a_switchover_is_progressing_then_healthy(cluster: Namespace) -> None:
    assert check("Switchover", dry_run(cluster, switchover("to-b", "web-b")), "no-status",
                 "Progressing")
    switchovers, groups = Versions(cluster, "swo"), Versions(cluster, "sg", "shop")
    try:
        cluster.wait_for("both watches started", lambda: groups.seen)
        cluster.apply(switchover("to-b", "web-b"))

        def phase(obj: dict[str, Any]) -> str:
            return str((obj.get("status") or {}).get("phase") or "")

        done = cluster.wait_for("the switchover Succeeded", lambda: switchovers.first(
            lambda v: v["metadata"]["name"] == "to-b" and phase(v) == "Succeeded"))
        online_on(cluster, ("web-b",))
        swo = switchovers.first(lambda v: v["metadata"]["name"] == "to-b"
                                and phase(v) == "Running")
        sg = groups.first(lambda v: (v.get("status") or {}).get("state") == "Switching")
    finally:
        switchovers.close()
        groups.close()
    assert swo is not None, [phase(v) for v in switchovers.seen]
    assert sg is not None, [(v.get("status") or {}).get("state") for v in groups.seen]
    check("Switchover", swo, "running", "Progressing")
    check("ServiceGroup", sg, "switching", "Progressing")
    check("Switchover", done, "succeeded", "Healthy")


def test_a_switchover_to_a_member_outside_the_systems_is_degraded(
        cluster: Namespace) -> None:
    cluster.apply(switchover("to-z", "web-z"))
    failed = cluster.wait_for("the switchover Failed", lambda: (
        lambda s: s if (s.get("status") or {}).get("phase") == "Failed" else None)(
            live(cluster, "swo", "to-z")))
    found = check("Switchover", failed, "failed", "Degraded")
    assert found["message"].startswith("TargetNotInSystems: ")


def test_a_frozen_group_is_suspended(cluster: Namespace) -> None:
    cluster.kubectl("patch", "sg", "shop", "--type=merge", "-p", '{"spec": {"frozen": true}}')
    frozen = cluster.wait_for("the Frozen condition", lambda: (
        lambda o: o if any(c["type"] == "Frozen" and c["status"] == "True"
                           for c in (o.get("status") or {}).get("conditions", ())) and
        o["status"]["observedGeneration"] == o["metadata"]["generation"] else None)(
            live(cluster, "sg", "shop")))
    check("ServiceGroup", frozen, "frozen", "Suspended")
    cluster.kubectl("patch", "sg", "shop", "--type=merge", "-p",
                    '{"spec": {"frozen": false}}')


def test_a_faulted_group_is_degraded(cluster: Namespace, simulator: Any) -> None:
    cluster.apply(solo())
    online_on(cluster, ("web-a",), "solo")
    uid = cluster.running("web-a")["metadata"]["uid"]
    [pid] = pids_in_guest(simulator.state_dir, uid, (MARKER + "1").encode())
    os.kill(pid, signal.SIGKILL)
    faulted = cluster.wait_for("solo Faulted", lambda: (
        lambda o: o if (o.get("status") or {}).get("state") == "Faulted" else None)(
            live(cluster, "sg", "solo")))
    found = check("ServiceGroup", faulted, "faulted", "Degraded")
    assert found["message"].startswith("Faulted: ")


def test_a_group_on_a_missing_cluster_is_degraded(cluster: Namespace) -> None:
    lost = shop()
    lost["metadata"]["name"] = "lost"
    lost["spec"]["cluster"] = "nowhere"
    cluster.apply(lost)
    found = cluster.wait_for("lost's status", lambda: (
        lambda o: o if (o.get("status") or {}).get("state") == "Unknown" else None)(
            live(cluster, "sg", "lost")))
    assert check("ServiceGroup", found, "cluster-not-found", "Degraded")["message"] == \
        "no InGuestCluster 'nowhere' in namespace " + cluster.name


def test_a_stopped_member_is_degraded_and_a_starting_one_progressing(
        cluster: Namespace) -> None:
    cluster.kubectl("patch", "vm", "web-c", "--type=merge", "-p",
                    '{"spec": {"runStrategy": "Halted"}}')
    stopped = cluster.wait_for("web-c Stopped", lambda: (
        lambda o: o if any(m["name"] == "web-c" and m["phase"] == "Stopped"
                           for m in (o.get("status") or {}).get("members", ())) else None)(
            live(cluster, "igc", CLUSTER)))
    assert check("InGuestCluster", stopped, "member-stopped", "Degraded")["message"] == \
        "Members not running: web-c (Stopped)"
    # back, with a node selector no node matches: it stays Scheduling, as on KubeVirt
    cluster.kubectl("patch", "vm", "web-c", "--type=merge", "-p", json.dumps(
        {"spec": {"runStrategy": "Always", "template": {"spec": {
            "nodeSelector": {"guestha.io/no-such-node": "true"}}}}}))
    starting = cluster.wait_for("web-c starting", lambda: (
        lambda o: o if any(m["name"] == "web-c" and m["phase"] in ("Pending", "Scheduling")
                           for m in (o.get("status") or {}).get("members", ())) else None)(
            live(cluster, "igc", CLUSTER)))
    check("InGuestCluster", starting, "member-starting", "Progressing")
    assert group(cluster, "shop").get("state") == "Online"
