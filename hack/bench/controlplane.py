"""Benchmark: how long the local control plane takes to start and to stop.

Warm start = binaries cached: etcd + kube-apiserver started, /readyz ok, the CRDs
(KubeVirt's and guestha's) installed and Established. Cold = the first build too, measured
with empty Go and guestha caches in a scratch folder (`--cold`, several minutes).

    hack/bench/run controlplane --trials 10 [--cold]
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

from bench.stats import summary
from testbed.devcluster import DevCluster


def warm(trials: int) -> dict[str, dict[str, float]]:
    up, crds, down = [], [], []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as folder:
            cluster = DevCluster(Path(folder))
            t0 = time.monotonic()
            cluster.control_plane.up()
            t1 = time.monotonic()
            cluster.install_crds()
            t2 = time.monotonic()
            cluster.down()
            t3 = time.monotonic()
            up.append(t1 - t0)
            crds.append(t2 - t1)
            down.append(t3 - t2)
    return {"ready_seconds": summary(up), "crds_seconds": summary(crds),
            "ready_with_crds_seconds": summary([a + b for a, b in zip(up, crds, strict=True)]),
            "down_seconds": summary(down)}


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
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="also time a build from nothing")
    args = parser.parse_args()
    result: dict[str, object] = {"warm": warm(args.trials)}
    if args.cold:
        result["cold"] = cold()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
