"""Benchmark: Debian's fence_kubevirt against the testbed - how long off, on and reboot take.

A private dev cluster (control plane, KubeVirt simulator with its subresource API) is
started in a scratch folder; one runStrategy Always VM is fenced over and over by the real
agent, run unchanged with a ServiceAccount that holds only the role of
manifests/fencing/fence-kubevirt-rbac.yaml. Each time is the agent's wall clock from start
to exit: the PUT of stop/start plus its polling until the VMI is gone (off) or Running (on);
fence-agents polls once a second, so the figures move in steps of about a second.

    hack/bench/run fence_kubevirt --trials 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from testbed.devcluster import REPO, DevCluster

FENCE_KUBEVIRT = "/usr/sbin/fence_kubevirt"
NAMESPACE = "bench"
VM = "fenced"
VM_MANIFEST = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachine",
    "metadata": {"name": VM, "namespace": NAMESPACE},
    "spec": {
        "runStrategy": "Always",
        "template": {
            "spec": {
                "terminationGracePeriodSeconds": 5,
                "domain": {"devices": {}, "memory": {"guest": "128Mi"}, "resources": {}},
                "volumes": [
                    {
                        "name": "cloudinitdisk",
                        "cloudInitNoCloud": {
                            "userData": "#!/bin/sh\nsystemd-run --unit=work sleep infinity\n"
                        },
                    }
                ],
            }
        },
    },
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 95), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def agent(config: Path, action: str) -> float:
    """One fence_kubevirt run (its own shebang: Debian's python3); its wall time."""
    t0 = time.monotonic()
    result = subprocess.run(
        [
            FENCE_KUBEVIRT,
            f"--kubeconfig={config}",
            f"--namespace={NAMESPACE}",
            f"--plug={VM}",
            f"--action={action}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    if result.returncode != 0:
        raise RuntimeError(
            f"fence_kubevirt {action} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return elapsed


def setup(cluster: DevCluster, folder: Path) -> Path:
    """The namespace, the VM (running) and the agent's kubeconfig; returns the latter."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    role = next(
        d
        for d in yaml.safe_load_all(
            (REPO / "manifests" / "fencing" / "fence-kubevirt-rbac.yaml").read_text()
        )
        if d and d["kind"] == "ClusterRole"
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", "fencer")
    cluster.kubectl(
        "-n",
        NAMESPACE,
        "create",
        "rolebinding",
        "fencer",
        f"--clusterrole={role['metadata']['name']}",
        f"--serviceaccount={NAMESPACE}:fencer",
    )
    token = cluster.kubectl(
        "-n", NAMESPACE, "create", "token", "fencer", "--duration=2h"
    ).stdout.strip()
    config = folder / "kubeconfig-fencer"
    cluster.control_plane.write_token_kubeconfig(config, token, "fencer")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(VM_MANIFEST))
    cluster.kubectl(
        "-n",
        NAMESPACE,
        "wait",
        f"vmi/{VM}",
        "--timeout=60s",
        "--for=jsonpath={.status.phase}=Running",
    )
    return config


def run(trials: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-fence-") as scratch:
        folder = Path(scratch)
        cluster = DevCluster(folder)
        cluster.up(simulator=False, operator=False)
        try:
            cluster.start_simulator(heartbeat_seconds=1.0)
            cluster.wait_simulator_ready()
            config = setup(cluster, folder)
            agent(config, "status")  # warm: the first run fills page caches
            off, on, reboot, status = [], [], [], []
            for _ in range(trials):
                status.append(agent(config, "status"))
                off.append(agent(config, "off"))
                on.append(agent(config, "on"))
                reboot.append(agent(config, "reboot"))
        finally:
            cluster.down()
    return {
        "agent": "fence_kubevirt (Debian fence-agents 4.12, unchanged)",
        "testbed": "kube-apiserver v1.36.3 + KubeVirt simulator (subresources.kubevirt.io)",
        "off_seconds": summary(off),
        "on_seconds": summary(on),
        "reboot_seconds": summary(reboot),
        "status_seconds": summary(status),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run fence_kubevirt",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="fencing rounds (default 20)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if not Path(FENCE_KUBEVIRT).exists():
        parser.error(f"{FENCE_KUBEVIRT} is missing: hack/setup installs fence-agents")
    figures = run(args.trials)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
