"""Benchmark: a simulated guest's `systemctl` call, and a guest host's boot and shutdown.

    hack/bench/run guestinit --trials 50 [--boots 5] [--out result.json]

Root only (guest hosts are namespaces). Boots KubeVirt-simulator guest hosts
(kubevirtsim.guesthost) in a scratch state folder and measures, each as median, p95 and n:

- `systemctl`: `systemctl is-active x` inside a guest, from the command's start to its exit
  (the guest's shim, its Python start-up and imports, the round trip to the guest's PID 1).
  The loop runs inside the guest (one exec of a Python timing loop), so nsenter's cost is
  not counted. A warm-up of five calls is not counted either.
- `interpreter_isolated`, `interpreter_no_site`: `python3 -I -c pass` and `python3 -I -S -c
  pass` with the guests' interpreter, in the same loop: the floor under a shim written in
  Python, with the site module (and site-packages' .pth files) and without it.
- `boot`: GuestHost.boot() (namespaces, network, PID 1 up with its private view);
  `cloud_init_done`: boot to `cloud-init status` done, for a guest with a one-line runcmd.
- `shutdown`: GuestHost.shutdown(10) of such a guest, with a service (systemd-run) that
  stops on SIGTERM, to powered off (tests/agent/test_guesthost.py proves it stops
  gracefully; this is how long).

The three alternate trial by trial, so that drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from kubevirtsim.guesthost import GuestHost, GuestSpec, cleanup_stale

USER_DATA = b"#cloud-config\nruncmd:\n  - [touch, /run/booted]\n"
# A service that stops on SIGTERM, started before each shutdown is timed.
GRACEFUL = ["systemd-run", "--unit=graceful", "/bin/sh", "-c",
            'trap "exit 0" TERM; while true; do sleep 0.1; done']

# Runs inside the guest: argv = trials, interpreter; prints {"systemctl": [...], ...}.
TIMING_LOOP = """\
import json, subprocess, sys, time
trials, python = int(sys.argv[1]), sys.argv[2]
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
def timed(argv):
    started = time.perf_counter()
    subprocess.run(argv, **quiet)
    return time.perf_counter() - started
for _ in range(5):
    timed(["systemctl", "is-active", "x"])
out = {"systemctl": [], "isolated": [], "no_site": []}
for _ in range(trials):
    out["systemctl"].append(timed(["systemctl", "is-active", "x"]))
    out["isolated"].append(timed([python, "-I", "-c", "pass"]))
    out["no_site"].append(timed([python, "-I", "-S", "-c", "pass"]))
print(json.dumps(out))
"""


def wait(predicate: Any, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError("benchmark step did not finish")


def spec(index: int) -> GuestSpec:
    name = f"bench-{index}"
    return GuestSpec(f"bench/{name}", f"uid-{name}", name, "NoCloud", USER_DATA, None, "n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run guestinit",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    boot: list[float] = []
    done: list[float] = []
    shutdown: list[float] = []
    calls: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder)
        try:
            for index in range(max(1, args.boots)):
                guest = GuestHost(spec(index), state)
                started = time.monotonic()
                guest.boot()
                boot.append(time.monotonic() - started)
                finished = wait(lambda: guest.cloud_init_status() != "running")  # noqa: B023
                done.append(finished - started)
                if guest.cloud_init_status() != "done":
                    raise RuntimeError(f"cloud-init in {guest.spec.key}: not done")
                if index == 0:
                    result = guest.exec(
                        ["python3", "-c", TIMING_LOOP, str(args.trials), sys.executable],
                        timeout=60 + args.trials * 2,
                    )
                    if result.returncode != 0:
                        raise RuntimeError(result.stderr.decode(errors="replace"))
                    calls = json.loads(result.stdout)
                started_unit = guest.exec(GRACEFUL)
                if started_unit.returncode != 0:
                    raise RuntimeError(started_unit.stderr.decode(errors="replace"))
                started = time.monotonic()
                guest.shutdown(10.0)
                if guest.wait_exit(0) != 0:
                    raise RuntimeError(f"{guest.spec.key}: not powered off by itself")
                shutdown.append(time.monotonic() - started)
        finally:
            cleanup_stale(state)
    report = {
        "systemctl_is_active_ms": summary([v * 1000 for v in calls["systemctl"]]),
        "interpreter_isolated_ms": summary([v * 1000 for v in calls["isolated"]]),
        "interpreter_no_site_ms": summary([v * 1000 for v in calls["no_site"]]),
        "boot_s": summary(boot),
        "cloud_init_done_s": summary(done),
        "shutdown_s": summary(shutdown),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
