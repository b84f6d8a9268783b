"""Benchmark: an agent rollout to a 3-member cluster, end to end (issue 16's figure).

A private dev cluster (control plane, KubeVirt simulator with 1 s node heartbeats, the
operator with its own RBAC) in a scratch folder; a 3-member InGuestCluster whose agents
the operator's webhook injects, with a Failover group (a Process) Online on its first
member and a Parallel group (a Process) Online everywhere, spec.agent.upgrade Manual.
Each trial restarts the operator with a newer bundle (the test hook
GUESTHA_TEST_BUNDLE_VERSION: the same sources, version `bench-rollout-N`), waits until it
reports the rollout Paused for that version, then sets spec.agent.upgrade Automatic and
times, from outside (the InGuestCluster's status read every 50 ms), until AgentsUpToDate
is True for that version: `rollout` (3 members). `member` is each member's upgrade as
the operator logs it (bundle accepted -> its agent back with the new version and its
groups Online there). Then Manual again for the next trial. An observer counts the
Failover application's live copies every 20 ms the whole time, and each trial checks
that no application process changed and nothing failed over or was fenced.

    hack/bench/run rollout [--trials 5] [--peer-timeout 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.stats import summary
from kits import simguests
from testbed.devcluster import OPERATOR, DevCluster

NAMESPACE = "bench-rollout"
CLUSTER = "ro"
MEMBERS = ("ro-a", "ro-b", "ro-c")
POLL_SECONDS = 0.05
TIMEOUT = 180.0
VERSION_ENV = "GUESTHA_TEST_BUNDLE_VERSION"
T = TypeVar("T")


def vm(name: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"runStrategy": "Always", "template": {"spec": {
                "terminationGracePeriodSeconds": 0,
                "domain": {"devices": {}, "memory": {"guest": "128Mi"}, "resources": {}}}}}}


def in_guest_cluster(peer_timeout_ms: int, upgrade: str) -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
            "spec": {"members": [{"name": m} for m in MEMBERS],
                     "heartbeat": {"intervalMilliseconds": 200,
                                   "peerTimeoutMilliseconds": peer_timeout_ms},
                     "fencing": {"policy": "KubeVirt", "watchdog": False,
                                 "selfFenceTimeoutSeconds": peer_timeout_ms // 1000 + 2},
                     "agent": {"upgrade": upgrade}}}


def group(name: str, kind: str, marker: str) -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"cluster": CLUSTER, "type": kind,
                     "systems": [{"member": m, "priority": i} for i, m in enumerate(MEMBERS)],
                     "resources": [{"name": "app", "type": "Process",
                                    "monitor": {"intervalSeconds": 1},
                                    "attributes": {"command": ["/bin/sleep", "86400",
                                                               marker]}}]}}


class Bench:
    def __init__(self, cluster: DevCluster, peer_timeout_ms: int) -> None:
        self.cluster = cluster
        self.peer_timeout_ms = peer_timeout_ms

    def apply(self, obj: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        done = self.cluster.kubectl("-n", NAMESPACE, "get", kind, name, "-o", "json",
                                    check=False)
        return dict(json.loads(done.stdout)) if done.returncode == 0 else {}

    def status(self) -> dict[str, Any]:
        return dict(self.get("igc", CLUSTER).get("status") or {})

    def condition(self) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions") or ()
                     if c["type"] == "AgentsUpToDate"), {})

    def wait(self, what: str, check: Callable[[], T | None],
             timeout: float = TIMEOUT) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found is not None and found is not False:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")
            time.sleep(POLL_SECONDS)

    def online(self, name: str, members: tuple[str, ...]) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = dict(self.get("sg", name).get("status") or {})
            ok = status.get("state") == "Online" and sorted(status.get("onlineOn") or ()) \
                == sorted(members)
            return status if ok else None
        return self.wait(f"{name} Online on {members}", check)

    def restart_operator(self, version: str) -> None:
        self.cluster.stop_process(OPERATOR)
        self.cluster.start_operator(timeout=120, env={VERSION_ENV: version})

    def trial(self, n: int, marker: str, logs_marker: str) -> dict[str, Any]:
        version = f"bench-rollout-{n}"
        app, shippers = simguests.copies(marker.encode()), simguests.copies(
            logs_marker.encode())
        failovers = int(self.online("app", (MEMBERS[0],)).get("failovers") or 0)
        fencings = int(self.status().get("fencings") or 0)
        log = self.cluster.log_of(OPERATOR)
        offset = log.stat().st_size if log.exists() else 0
        self.restart_operator(version)
        self.wait(f"the rollout of {version} Paused", lambda: (
            self.condition().get("reason") == "Paused"
            and version in self.condition().get("message", "")))
        t0 = time.monotonic()
        self.apply(in_guest_cluster(self.peer_timeout_ms, "Automatic"))
        self.wait(f"AgentsUpToDate for {version}", lambda: (
            self.condition().get("status") == "True"
            and version in self.condition().get("message", "")))
        took = time.monotonic() - t0
        self.apply(in_guest_cluster(self.peer_timeout_ms, "Manual"))
        versions = {m["name"]: m.get("agentVersion") for m in self.status()["members"]}
        if versions != {m: version for m in MEMBERS}:
            raise RuntimeError(f"versions after the rollout: {versions}")
        if sorted(simguests.copies(marker.encode())) != sorted(app) or sorted(
                simguests.copies(logs_marker.encode())) != sorted(shippers):
            raise RuntimeError("an application process changed during the rollout")
        if int(self.online("app", (MEMBERS[0],)).get("failovers") or 0) != failovers:
            raise RuntimeError("a failover was counted during the rollout")
        if int(self.status().get("fencings") or 0) != fencings:
            raise RuntimeError("a member was fenced during the rollout")
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        members = [float(s) for s in re.findall(
            rf"runs agent {re.escape(version)} \(was \S+\) \(([\d.]+) s\)", text)]
        if len(members) != len(MEMBERS):
            raise RuntimeError(f"{len(members)} member upgrades logged, not {len(MEMBERS)}")
        return {"rollout": took, "members": members}


def run(trials: int, peer_timeout_ms: int) -> dict[str, Any]:
    marker = f"0.{random.randrange(10**8, 10**9)}"
    logs_marker = f"0.{random.randrange(10**8, 10**9)}"
    rollouts: list[float] = []
    members: list[float] = []
    error = None
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as scratch:
        cluster = DevCluster(Path(scratch))
        cluster.up(simulator=False, operator=False)
        counter = simguests.CopyCounter(marker.encode())
        try:
            cluster.start_simulator(heartbeat_seconds=1.0)
            cluster.wait_simulator_ready()
            cluster.start_operator()
            cluster.kubectl("create", "namespace", NAMESPACE)
            cluster.kubectl("label", "namespace", NAMESPACE, "guestha.io/injection=enabled")
            bench = Bench(cluster, peer_timeout_ms)
            bench.apply(in_guest_cluster(peer_timeout_ms, "Manual"))
            for member in MEMBERS:
                bench.apply(vm(member))
            bench.apply(group("app", "Failover", marker))
            bench.apply(group("logs", "Parallel", logs_marker))
            with counter:
                bench.online("app", (MEMBERS[0],))
                bench.online("logs", MEMBERS)
                try:
                    for n in range(1, trials + 1):
                        figures = bench.trial(n, marker, logs_marker)
                        rollouts.append(figures["rollout"])
                        members.extend(figures["members"])
                except (TimeoutError, RuntimeError) as e:
                    error = f"trial {len(rollouts) + 1}: {e}"
        finally:
            cluster.down()
    return {"testbed": "kube-apiserver + KubeVirt simulator, the operator and 3 injected "
                       "agents on one 2-core host",
            "peerTimeoutMilliseconds": peer_timeout_ms,
            "seconds": {"rollout": summary(rollouts) if rollouts else None,
                        "member": summary(members) if members else None},
            "error": error,
            "copies": {"samples": counter.samples, "double_instants": len(counter.doubles)}}


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run rollout",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="rollouts (default 5)")
    parser.add_argument("--peer-timeout", type=int, default=3000,
                        help="heartbeat.peerTimeoutMilliseconds (default 3000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    figures = run(args.trials, args.peer_timeout)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if figures["copies"]["double_instants"]:
        print("FAILED: two live copies of the application at some instant (safety rule 1)")
        return 1
    if figures["error"]:
        print(f"FAILED: {figures['error']}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
