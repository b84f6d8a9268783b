"""Benchmark: guestha's own fencing on the testbed - from request_stop to a confirmed stop.

A private dev cluster (control plane, KubeVirt simulator) is started in a scratch folder;
one runStrategy Always VM is stopped over and over with `guestha.kubevirt.fencing`, with the
operator ServiceAccount's RBAC, and followed as the operator follows it (kits.stopwatch:
a VMI watch folded into a StopRecord, the node and its Lease read for each verdict, every
20 ms). Per trial, from the moment request_stop is called:

- request: request_stop returned (the grace patch and the DELETE);
- final: the VMI was first seen final or gone (the node stopped the guest);
- confirmed: stop_verdict said Confirmed (the node also renewed its Lease after that,
  which it does every quarter of its Lease: 2 s on the devcluster's simulated nodes).

    hack/bench/run fencing --trials 30 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.stats import summary
from guestha.kubevirt import kubeapi
from guestha.kubevirt.fencing import request_stop
from kits.stopwatch import Observer
from testbed.devcluster import DevCluster

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
                "terminationGracePeriodSeconds": 30,  # request_stop makes it 0
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


def running_uid(cluster: DevCluster, other_than: str) -> str:
    """The uid of the VM's VMI once a new one (not `other_than`) is Running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = cluster.kubectl("-n", NAMESPACE, "get", "vmi", VM, "-o", "json", check=False)
        if out.returncode == 0:
            vmi = json.loads(out.stdout)
            uid = str(vmi["metadata"]["uid"])
            if uid != other_than and vmi.get("status", {}).get("phase") == "Running":
                return uid
        time.sleep(0.2)
    raise TimeoutError("the VM's VMI did not run again within 120 s")


def trial(api: object, observer: Observer) -> tuple[float, float, float]:
    record = observer.begin()
    t0 = time.monotonic()
    asyncio.run(request_stop(NAMESPACE, VM, record.uid, client=api))
    requested = time.monotonic() - t0
    final = confirmed = 0.0
    deadline = t0 + 60
    while time.monotonic() < deadline:
        verdict = observer.verdict()
        assert observer.record is not None
        if not final and observer.record.settled:
            final = time.monotonic() - t0
        if verdict.confirmed:
            confirmed = time.monotonic() - t0
            return requested, final or confirmed, confirmed
        time.sleep(0.02)
    raise TimeoutError(f"the stop was not confirmed within 60 s: {observer.record}")


def run(trials: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-fencing-") as scratch:
        cluster = DevCluster(Path(scratch))
        cluster.up(simulator=False, operator=False)
        try:
            cluster.start_simulator(heartbeat_seconds=1.0)
            cluster.wait_simulator_ready()
            api = kubeapi.client_from_kubeconfig(str(cluster.operator_kubeconfig()))
            cluster.kubectl("create", "namespace", NAMESPACE)
            cluster.kubectl("apply", "-f", "-", input=json.dumps(VM_MANIFEST))
            observer = Observer(api, str(cluster.operator_kubeconfig()), NAMESPACE, VM)
            requested, final, confirmed = [], [], []
            uid = running_uid(cluster, "")
            try:
                for _ in range(trials):
                    r, f, c = trial(api, observer)
                    requested.append(r)
                    final.append(f)
                    confirmed.append(c)
                    uid = running_uid(cluster, uid)
            finally:
                observer.stop()
        finally:
            cluster.down()
    return {
        "testbed": "kube-apiserver v1.36.3 + KubeVirt simulator, node Leases of 8 s "
                   "renewed every 2 s",
        "request_seconds": summary(requested),
        "final_seconds": summary(final),
        "confirmed_seconds": summary(confirmed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run fencing",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="stops (default 30)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    text = json.dumps(run(args.trials), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
