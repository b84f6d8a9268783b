"""Benchmark: how long the local cluster takes to start and stop, and to see a node fail.

Warm start = binaries cached, one trial per fresh folder, each step as `hack/devcluster up`
runs it: etcd + kube-apiserver until /readyz; the CRDs (KubeVirt's and guestha's)
installed and Established; kube-controller-manager until every controller of
`controlplane.CONTROLLERS` has started; the KubeVirt simulator until its nodes are Ready
and virt-api's aggregated API answers; the operator until its liveness probe answers.
`up_seconds` is the sum (what `hack/devcluster up` waits for), `down_seconds` the stop.
Node fault = a Node annotated Unresponsive until the node lifecycle controller reports
Ready=Unknown, and until it has both unreachable taints (the devcluster's grace period is
`controlplane.NODE_MONITOR_GRACE_SECONDS`). Cold = the first build too, measured with empty
Go and guestha caches in a scratch folder (`--cold`, several minutes).

    hack/bench/run controlplane --trials 10 [--node-trials 10] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from testbed.controlplane import NODE_MONITOR_GRACE_SECONDS
from testbed.devcluster import DevCluster

FAULT = "kubevirtsim.guestha.io/fault"
UNREACHABLE = "node.kubernetes.io/unreachable"


def warm(trials: int) -> dict[str, dict[str, float]]:
    steps: dict[str, list[float]] = {k: [] for k in (
        "apiserver_ready_seconds", "crds_seconds", "controller_manager_ready_seconds",
        "simulator_ready_seconds", "operator_ready_seconds", "up_seconds", "down_seconds")}
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as folder:
            cluster = DevCluster(Path(folder))
            marks = [time.monotonic()]
            try:
                cluster.control_plane.start_apiserver()
                marks.append(time.monotonic())
                cluster.install_crds()
                marks.append(time.monotonic())
                cluster.control_plane.start_controller_manager()
                marks.append(time.monotonic())
                cluster.start_simulator()
                cluster.wait_simulator_ready()
                marks.append(time.monotonic())
                cluster.start_operator()
                marks.append(time.monotonic())
            finally:
                cluster.down()
            marks.append(time.monotonic())
        names = list(steps)
        for i, name in enumerate(names[:5]):
            steps[name].append(marks[i + 1] - marks[i])
        steps["up_seconds"].append(marks[5] - marks[0])
        steps["down_seconds"].append(marks[6] - marks[5])
    return {name: summary(values) for name, values in steps.items()}


def _node(cluster: DevCluster, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "node", name, "-o", "json").stdout))


def _ready(node: dict[str, Any]) -> str:
    return next(str(c["status"]) for c in node["status"]["conditions"] if c["type"] == "Ready")


def _tainted(node: dict[str, Any]) -> bool:
    effects = {t["effect"] for t in node["spec"].get("taints") or [] if t["key"] == UNREACHABLE}
    return effects == {"NoSchedule", "NoExecute"}


def node_fault(trials: int) -> dict[str, object]:
    """A simulated node stops answering: how long until the node lifecycle controller
    says so (Ready=Unknown, then both unreachable taints); then it answers again."""
    unknown, tainted, back = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        cluster = DevCluster(Path(folder))
        try:
            cluster.up(operator=False)
            for _ in range(trials):
                t0 = time.monotonic()
                cluster.kubectl("annotate", "node", "node-1", f"{FAULT}=Unresponsive")
                seen_unknown = 0.0
                while True:
                    node = _node(cluster, "node-1")
                    if not seen_unknown and _ready(node) == "Unknown":
                        seen_unknown = time.monotonic()
                    if seen_unknown and _tainted(node):
                        break
                    if time.monotonic() - t0 > 120:
                        raise TimeoutError("node-1 was not marked within 120 s")
                    time.sleep(0.05)
                unknown.append(seen_unknown - t0)
                tainted.append(time.monotonic() - t0)
                t1 = time.monotonic()
                cluster.kubectl("annotate", "node", "node-1", f"{FAULT}-")
                while _ready(node := _node(cluster, "node-1")) != "True" or any(
                        t["key"] == UNREACHABLE for t in node["spec"].get("taints") or []):
                    time.sleep(0.05)
                back.append(time.monotonic() - t1)
        finally:
            cluster.down()
    return {"node_monitor_grace_seconds": NODE_MONITOR_GRACE_SECONDS,
            "fault_to_ready_unknown_seconds": summary(unknown),
            "fault_to_unreachable_taints_seconds": summary(tainted),
            "answering_to_ready_untainted_seconds": summary(back)}


def cold() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, XDG_CACHE_HOME=f"{scratch}/cache", GOCACHE=f"{scratch}/go-build",
                   GOMODCACHE=f"{scratch}/go-mod")
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "testbed" /
                                            "build.py")], env=env, check=True)
        build = time.monotonic() - t0
        subprocess.run(["chmod", "-R", "u+w", scratch], check=False)  # Go's module cache
    return {"build_seconds": round(build, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run controlplane",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="warm starts (0: none)")
    parser.add_argument("--node-trials", type=int, default=10, help="node faults (0: none)")
    parser.add_argument("--cold", action="store_true", help="also time a build from nothing")
    args = parser.parse_args()
    result: dict[str, object] = {}
    if args.trials:
        result["warm"] = warm(args.trials)
    if args.node_trials:
        result["node_fault"] = node_fault(args.node_trials)
    if args.cold:
        result["cold"] = cold()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
