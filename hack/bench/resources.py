"""Benchmark: how fast the agent's resources and groups do what their tests prove.

    hack/bench/run resources [--trials 20] [--guest-trials 20] [--out result.json]

tests/agent/test_agent_resources.py and test_agent_groups.py assert orders, counts and
states only (correctness never rests on a wall clock there); the times they once bounded
are measured here, each as median, p95 and n. In one process, with the agent's own
classes and the tests' kit (tests/kits/resources.py), real programs:

- exitNotificationMs: SIGKILL of a Process resource's program -> the resource reports the
  change (its exit watcher); `pidfd` as on Linux 5.3+, `procPolling` with os.pidfd_open
  hidden, as on older kernels (the watcher then reads /proc every 100 ms);
- restartInPlaceMs: in a GroupRunner, SIGKILL -> ResourceRestarted, and -> the resource
  Online again (MonitorInterval an hour: the exit alone brings it);
- processOfflineMs: offline of a Process whose program exits on SIGTERM;
- stopEscalationS: offline of a Process that ignores SIGTERM, stopTimeoutSeconds 1
  (SIGKILL 1 s after SIGTERM);
- toleranceFaultS: ToleranceLimit 1, MonitorInterval 1 s: the application's state gone ->
  ResourceFaulted (the second offline answer, so one to two intervals);
- parallelStartS: a group whose two middle resources take 0.6 s each to start: online ->
  Online (side by side about 0.6 s plus the rest; one after the other 1.2 s plus);
- selfFenceS: take_failover_groups_offline with a 10 s deadline, as the test, of a
  Failover group whose stop program hangs and one still starting (half the time left
  goes to the offline action, so the hung stop alone costs about 5 s before clean);
- faultDetectionInAGuestHostMs (root only, else left out): inside a simulated guest (its
  PID 1 reaps orphans, as systemd does), SIGKILL -> ResourceRestarted for a Process and an
  OCF heartbeat:anything with a 1 s monitor, killed at a random moment of the interval.

Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.stats import summary
from guestha.agent.groups import GroupRunner
from guestha.agent.resources import ExitWatcher, Process, ResourceContext, create
from kits.resources import (
    PUSHED,
    Events,
    group,
    guest_host,
    kill_tagged,
    new_tag,
    pid_of,
    pids_with,
    resource,
    run_in_guest,
    running_runner,
    sleeper,
    wait_for,
    wait_group,
)

OCF_ANYTHING = Path("/usr/lib/ocf/resource.d/heartbeat/anything")


def ms(values: list[float]) -> dict[str, float]:
    return summary([v * 1000 for v in values])


@contextmanager
def scratch() -> Iterator[tuple[Path, str]]:
    """A scratch folder and a tag for the programs started in it (killed at the end)."""
    tag = new_tag()
    with tempfile.TemporaryDirectory(prefix="guestha-bench-resources-") as folder:
        try:
            yield Path(folder), tag
        finally:
            kill_tagged(tag)


@contextmanager
def without_pidfd() -> Iterator[None]:
    """os.pidfd_open hidden: the exit watcher falls back to reading /proc."""
    saved = getattr(os, "pidfd_open", None)
    if saved is not None:
        del os.pidfd_open
    try:
        yield
    finally:
        if saved is not None:
            os.pidfd_open = saved


def process(folder: Path, name: str, watcher: ExitWatcher, notify: Callable[[], None],
            attributes: dict[str, Any]) -> Process:
    context = ResourceContext("bench", name, str(folder / name), watcher, notify)
    made = create("Process", context, attributes)
    assert isinstance(made, Process)
    return made


# --------------------------------------------------------------------------- resources


def exit_notification(trials: int, polled: bool) -> list[float]:
    seconds = []
    with scratch() as (folder, tag):
        watcher = ExitWatcher()
        notified = threading.Event()
        proc = process(folder, "p", watcher, notified.set, {"command": sleeper(tag)})
        try:
            for _ in range(trials):
                if polled:
                    with without_pidfd():
                        proc.online(5)
                else:
                    proc.online(5)
                pid = int(proc.monitor(5).message.split()[1])
                notified.clear()
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                if not notified.wait(10):
                    raise RuntimeError("the exit was not reported")
                seconds.append(time.monotonic() - killed)
                proc.clean(5)
        finally:
            watcher.close()
    return seconds


TERM_EXITS = "import time\nwhile True: time.sleep(60)"
TERM_IGNORED = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "while True: time.sleep(60)")


def offline_times(trials: int, program: str, stop_timeout: int) -> list[float]:
    seconds = []
    with scratch() as (folder, tag):
        watcher = ExitWatcher()
        proc = process(folder, "p", watcher, lambda: None, {
            "command": ["python3", "-c", program, tag], "stopTimeoutSeconds": stop_timeout})
        try:
            for _ in range(trials):
                proc.online(5)
                wait_for(lambda: len(pids_with(tag)) == 1, 5, "the program")
                time.sleep(0.2)  # its signal handler is in place
                started = time.monotonic()
                proc.offline(60)
                seconds.append(time.monotonic() - started)
                if pids_with(tag):
                    raise RuntimeError("offline left the program running")
        finally:
            watcher.close()
    return seconds


# --------------------------------------------------------------------------- groups


def restart_in_place(trials: int) -> tuple[list[float], list[float]]:
    restarted, online = [], []
    with scratch() as (folder, tag), running_runner(str(folder / "state"), tag) as (
            runner, events):
        runner.configure([group("g", [resource(
            "app", "Process", {"command": sleeper(tag)}, restartLimit=trials,
            confIntervalSeconds=0, monitor=dict(PUSHED))])])
        wait_group(runner, "g", "Offline", 10)
        runner.online("g")
        wait_group(runner, "g", "Online", 10)
        for _ in range(trials):
            killed = time.monotonic()
            os.kill(pid_of(runner, "g", "app"), signal.SIGKILL)
            seen, _ = events.wait("ResourceRestarted", 10, since=killed, resource="app")
            back, _ = events.wait("ResourceState", 10, since=killed, resource="app",
                                  state="Online")
            restarted.append(seen - killed)
            online.append(back - killed)
    return restarted, online


def tolerance_fault(trials: int) -> list[float]:
    seconds = []
    with scratch() as (folder, tag), running_runner(str(folder / "state"), tag) as (
            runner, events):
        flag = folder / "up"
        app = {"startProgram": f"touch {flag}", "stopProgram": f"rm -f {flag}",
               "monitorProgram": f"test -e {flag} && exit 110; exit 100"}
        runner.configure([group("g", [resource("a", "Application", app, toleranceLimit=1)])])
        wait_group(runner, "g", "Offline", 10)
        for _ in range(trials):
            runner.clear("g")
            wait_group(runner, "g", "Offline", 10)
            runner.online("g")
            wait_group(runner, "g", "Online", 10)
            gone = time.monotonic()
            flag.unlink()
            seen, _ = events.wait("ResourceFaulted", 10, since=gone, resource="a")
            seconds.append(seen - gone)
            wait_group(runner, "g", "Faulted", 10)
    return seconds


def timed_app(name: str, folder: Path, tag: str, delay: float) -> dict[str, Any]:
    pidfile = folder / f"{name}.pid"
    return {"startProgram": f"sleep {delay}; python3 -c 'import time; time.sleep(1000)' "
                            f"{tag} >/dev/null 2>&1 & echo $! > {pidfile}",
            "stopProgram": f"kill $(cat {pidfile}); rm -f {pidfile}",
            "pidFiles": [str(pidfile)]}


def parallel_start(trials: int) -> list[float]:
    seconds = []
    with scratch() as (folder, tag), running_runner(str(folder / "state"), tag) as (
            runner, _):
        runner.configure([group("shop", [
            resource("web", "Application", timed_app("web", folder, tag, 0),
                     dependsOn=["app1", "app2"]),
            resource("app1", "Application", timed_app("app1", folder, tag, 0.6),
                     dependsOn=["data"]),
            resource("app2", "Application", timed_app("app2", folder, tag, 0.6),
                     dependsOn=["data"]),
            resource("data", "Application", timed_app("data", folder, tag, 0)),
        ])])
        wait_group(runner, "shop", "Offline", 10)
        for _ in range(trials):
            began = time.monotonic()
            runner.online("shop")
            wait_group(runner, "shop", "Online", 20)
            seconds.append(time.monotonic() - began)
            runner.offline("shop")
            wait_group(runner, "shop", "Offline", 20)
    return seconds


def self_fence(trials: int) -> list[float]:
    seconds = []
    for _ in range(trials):
        with scratch() as (folder, tag):
            runner = GroupRunner(str(folder / "state"), Events())
            try:
                pidfile = folder / "stuck.pid"
                stuck = {"startProgram": f"python3 -c 'import time; time.sleep(1000)' {tag} "
                                         f">/dev/null 2>&1 & echo $! > {pidfile}",
                         "stopProgram": "sleep 60", "pidFiles": [str(pidfile)]}
                runner.configure([
                    group("fo", [resource("p", "Process", {"command": sleeper(tag, "fo")}),
                                 resource("stuck", "Application", stuck)]),
                    group("slow", [resource("s", "Application", {
                        "startProgram": f"python3 -c 'import time; time.sleep(1000)' {tag}",
                        "stopProgram": "true", "monitorProgram": "exit 100"})]),
                ])
                wait_group(runner, "fo", "Offline", 10)
                runner.online("fo")
                wait_group(runner, "fo", "Online", 10)
                wait_group(runner, "slow", "Offline", 10)
                runner.online("slow")
                wait_group(runner, "slow", "Starting", 10)
                began = time.monotonic()
                if not runner.take_failover_groups_offline("bench", timeout=10.0):
                    raise RuntimeError("self-fencing did not finish by its deadline")
                seconds.append(time.monotonic() - began)
            finally:
                runner.close()
    return seconds


def in_a_guest_host(trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="guestha-bench-guests-") as folder, \
            guest_host(folder, "bench-kills") as guest:
        code = ("import json, kits.resources as h\n"
                "print(json.dumps(h.kill_scenario(sys.argv[1], int(sys.argv[2]), True)))")
        found = {kind: json.loads(run_in_guest(guest, code, kind, str(trials),
                                               timeout=120 + 5 * trials)
                                  .strip().splitlines()[-1])
                 for kind in ("Process", "OCF")}
    return {"process": ms(found["Process"]["seconds"]),
            "ocfAnything1sMonitor": ms(found["OCF"]["seconds"])}


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run resources",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--guest-trials", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trials = max(1, args.trials)
    few = max(1, trials // 4)  # for the scenarios that take seconds each
    restarted, back_online = restart_in_place(trials)
    report: dict[str, Any] = {
        "exitNotificationMs": {"pidfd": ms(exit_notification(trials, False)),
                               "procPolling": ms(exit_notification(trials, True))},
        "restartInPlaceMs": {"killToResourceRestarted": ms(restarted),
                             "killToOnline": ms(back_online)},
        "processOfflineMs": ms(offline_times(trials, TERM_EXITS, 10)),
        "stopEscalationS": summary(offline_times(few, TERM_IGNORED, 1)),
        "toleranceFaultS": summary(tolerance_fault(few)),
        "parallelStartS": summary(parallel_start(few)),
        "selfFenceS": summary(self_fence(few)),
    }
    if os.geteuid() == 0 and OCF_ANYTHING.exists():
        report["faultDetectionInAGuestHostMs"] = in_a_guest_host(max(1, args.guest_trials))
    report["python"] = sys.version.split()[0]
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
