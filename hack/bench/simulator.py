"""Benchmark: VirtualMachine created -> VMI Running (with an address) -> AgentConnected,
and VMI deleted -> guest host gone, on the local devcluster with the KubeVirt simulator.

    hack/bench/run simulator --trials 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes

from bench.stats import summary
from testbed.devcluster import DevCluster

VM: dict[str, Any] = {
    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
    "metadata": {"name": "bench"},
    "spec": {"runStrategy": "Always", "template": {"spec": {
        "terminationGracePeriodSeconds": 0,
        "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}},
        "volumes": [{"name": "cloudinit", "cloudInitNoCloud": {
            "userData": "#cloud-config\nruncmd:\n  - [touch, /run/booted]\n"}}]}}},
}


def wait(predicate: Any, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError("benchmark step did not finish")


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run simulator",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cluster = DevCluster(Path(folder))
        cluster.up(operator=False)
        try:
            kubernetes.config.load_kube_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
            api: Any = kubernetes.client.CustomObjectsApi()
            args_ = ("kubevirt.io", "v1", "default")

            def vmi() -> dict[str, Any] | None:
                try:
                    return dict(api.get_namespaced_custom_object(
                        *args_, "virtualmachineinstances", "bench"))
                except kubernetes.client.ApiException as e:
                    if e.status == 404:
                        return None
                    raise

            def running() -> bool:
                v = vmi()
                return bool(v and v.get("status", {}).get("phase") == "Running"
                            and v["status"].get("interfaces"))

            def agent() -> bool:
                v = vmi()
                return bool(v and any(c.get("type") == "AgentConnected" and
                                      c.get("status") == "True"
                                      for c in v.get("status", {}).get("conditions", [])))

            to_running, to_agent, to_gone = [], [], []
            for _ in range(args.trials):
                t0 = time.monotonic()
                api.create_namespaced_custom_object(*args_, "virtualmachines", VM)
                to_running.append(wait(running) - t0)
                to_agent.append(wait(agent) - t0)
                t1 = time.monotonic()
                api.delete_namespaced_custom_object(*args_, "virtualmachines", "bench")
                to_gone.append(wait(lambda: vmi() is None) - t1)
                wait(lambda: not cluster.kubectl("get", "vm", "bench", "-n", "default",
                                                 check=False).stdout)
        finally:
            cluster.down()
    print(json.dumps({"vm_created_to_vmi_running_seconds": summary(to_running),
                      "vm_created_to_agent_connected_seconds": summary(to_agent),
                      "vm_deleted_to_vmi_gone_seconds": summary(to_gone)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
