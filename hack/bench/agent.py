"""Benchmark of the guest agent (issue 3's figures): fault detection latency through the
channel, and the agent's memory and CPU with 50 resources at default monitor intervals.

Three guest hosts run the agent as cloud-init installs it (tests/kits/guests.py, the
set-up of tests/agent/test_agent_e2e.py); this script is the operator.

    hack/bench/run agent [--trials 20] [--window 120] [--idle-window 30]

(a) SIGKILL of a resource's process -> ResourceFaulted received by the operator's event
    long-poll: for a Process resource (the agent waits on its child, no polling) and for
    an OCF heartbeat:anything resource (polled: its monitor runs every 1 s, so this
    measures that interval plus one monitor run).
(b) VmRSS and CPU (utime+stime from /proc/PID/stat over the window, as % of one core) of
    the agent process with 30 Process (sleep), 10 OCF Dummy and 10 Application resources
    Online at default monitor intervals (60 s online, 300 s offline), and of the same agent
    idle (no groups). Monitor programs (OCF agents, shells) are children the agent reaps:
    their CPU is reported separately (cutime+cstime). Each of `--footprint-trials` trials
    boots fresh guests, so each is a new agent process; the figures are the median and p95
    over the trials of each trial's highest RSS in its window, checked against the goal of
    issue 16: at most 25 MB (25,000,000 bytes) with the 50 resources.

The agent runs on GUESTHA_AGENT_PYTHON (the guests' Python, 3.9 where hack/test finds one),
else on this interpreter: `agentPython` in the output says which.

Prints one JSON object. Needs root (guest hosts).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from kits.client import Client
from kits.cluster import configure, wait_quorum
from kits.events import EventReader
from kits.guests import GuestAgent, guest_agents
from kits.interpreters import agent_python
from kits.pki import Pki
from kits.waiting import wait_for

MEMBERS = ("bench-a", "bench-b", "bench-c")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RSS_GOAL_BYTES = 25_000_000  # issue 16: the agent's RSS with 50 resources at most 25 MB


# --------------------------------------------------------------------------- helpers


class Operator:
    """The benchmark's operator: one command client and one event reader per agent."""

    def __init__(self, agents: list[GuestAgent]) -> None:
        self.agents = agents
        self.epoch = 1
        self.clients: dict[str, Client] = {a.member: a.client(epoch=self.epoch) for a in agents}
        self.readers = {
            a.member: EventReader(a.client(timeout=15.0, epoch=self.epoch), poll_seconds=5.0)
            for a in agents
        }

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        for c in self.clients.values():
            c.close()

    def act(self, member: str, group: str, action: str) -> None:
        code, body = self.clients[member].command(
            "POST", f"/v1/groups/{group}/{action}", self.epoch
        )
        if code != 200:
            raise RuntimeError(f"{member}: {action} {group} answered {code}: {body}")

    def configure(self, groups_of: dict[str, list[dict[str, Any]]]) -> None:
        # The guest hosts have no watchdog device: Failover groups may go online without.
        configure(self.agents, self.clients, self.epoch, lambda a: groups_of.get(a.member, []),
                  fencing={"watchdog": False})
        wait_quorum(self.agents, self.clients)

    def groups(self, member: str) -> dict[str, Any]:
        return dict(self.clients[member].status()["groups"])


def proc_stat(pid: int) -> tuple[float, float]:
    """(utime+stime, cutime+cstime) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return own, children


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def measure(agent: GuestAgent, window: float) -> dict[str, Any]:
    """The agent's CPU over `window` seconds and its RSS (sampled every second)."""
    pid = agent.agent_pid()
    if pid is None:
        raise RuntimeError(f"{agent.member}: the agent does not run")
    done = threading.Event()
    own0, children0 = proc_stat(pid)
    start = time.monotonic()
    samples = [rss_kib(pid)]
    while not done.wait(1.0):
        samples.append(rss_kib(pid))
        if time.monotonic() - start >= window:
            break
    elapsed = time.monotonic() - start
    own1, children1 = proc_stat(pid)
    if agent.agent_pid() != pid:
        raise RuntimeError(f"{agent.member}: the agent restarted during the window")
    return {
        "windowSeconds": round(elapsed, 1),
        "cpuPercentOfOneCore": round(100 * (own1 - own0) / elapsed, 3),
        "childrenCpuPercentOfOneCore": round(100 * (children1 - children0) / elapsed, 3),
        "rssKiB": {"end": samples[-1], "max": max(samples), "min": min(samples)},
        "threads": _threads(pid),
    }


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- (a) latency


def event_wall_time(event: dict[str, Any]) -> float:
    """An event's time stamp (the agent's wall clock when it emitted it), in seconds."""
    stamp = str(event["time"])
    return (
        calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000
    )


def latency_trials(
    operator: Operator, agent: GuestAgent, group: str, resource: str, argv: list[str], trials: int
) -> tuple[list[float], list[float]]:
    """kill -> ResourceFaulted, in ms, `trials` times: as received by the client, and as
    stamped by the agent (same machine, same clock; the stamp has 1 ms resolution)."""
    reader = operator.readers[agent.member]
    phase = random.Random(trials)
    results, stamped = [], []
    for _ in range(trials):
        mark = reader.mark()
        operator.act(agent.member, group, "online")
        reader.wait("GroupState", 30, mark, group=group, state="Online")
        [pid] = wait_for(lambda: agent.pids(argv), 10, 0.01, what=f"{resource}'s process")
        # The kill lands at a random phase of the monitor cycle (a polled monitor's
        # detection time depends on it): part of the measurement, not a wait.
        time.sleep(phase.uniform(0.0, 1.0))
        mark = reader.mark()
        killed_wall, killed = time.time(), time.monotonic()
        os.kill(pid, signal.SIGKILL)
        fault = reader.wait("ResourceFaulted", 10, mark, group=group, resource=resource)
        results.append((fault.at - killed) * 1000)
        stamped.append((event_wall_time(fault.event) - killed_wall) * 1000)
        reader.wait("GroupState", 30, mark, group=group, state="Faulted")
        mark = reader.mark()
        operator.act(agent.member, group, "clear")
        wait_for(
            lambda: operator.groups(agent.member)[group]["state"] == "Offline",
            30,
            what=f"{group} cleared",
        )
    return results, stamped


def fault_detection(operator: Operator, agent: GuestAgent, trials: int) -> dict[str, Any]:
    sleeper = ["sleep", "86400.123"]
    anything = ["/bin/sleep", "86400.456"]
    groups = [
        {
            "name": "lat-process",
            "resources": [{"name": "app", "type": "Process", "attributes": {"command": sleeper}}],
        },
        {
            "name": "lat-ocf",
            "resources": [
                {
                    "name": "app",
                    "type": "OCF",
                    "monitor": {"intervalSeconds": 1, "timeoutSeconds": 10},
                    "attributes": {
                        "agent": "heartbeat:anything",
                        "parameters": {"binfile": "/bin/sleep", "cmdline_options": anything[1]},
                    },
                }
            ],
        },
    ]
    operator.configure({agent.member: groups})
    process, process_stamped = latency_trials(
        operator, agent, "lat-process", "app", sleeper, trials
    )
    ocf, ocf_stamped = latency_trials(operator, agent, "lat-ocf", "app", anything, trials)
    return {
        "what": "SIGKILL from the host -> ResourceFaulted received by the operator's event "
        "long-poll (clientMs); agentStampMs: the event's own time stamp",
        "process": {
            "resource": "Process (the agent waits on its child: no polling; "
            "default 60 s monitor interval)",
            "clientMs": summary(process),
            "agentStampMs": summary(process_stamped),
        },
        "ocfAnything": {
            "resource": "OCF heartbeat:anything with a 1 s monitor interval "
            "(polled: detection is bounded by the interval)",
            "clientMs": summary(ocf),
            "agentStampMs": summary(ocf_stamped),
        },
        "samplesClientMs": {
            "process": [round(v, 2) for v in process],
            "ocfAnything": [round(v, 2) for v in ocf],
        },
    }


# --------------------------------------------------------------------------- (b) footprint


def fifty_resources() -> list[dict[str, Any]]:
    """5 groups x (6 Process sleep + 2 OCF Dummy + 2 Application), default intervals."""
    groups = []
    for g in range(5):
        resources: list[dict[str, Any]] = []
        for i in range(6):
            resources.append(
                {
                    "name": f"sleep{i}",
                    "type": "Process",
                    "attributes": {"command": ["sleep", f"86400.{g}{i}"]},
                }
            )
        for i in range(2):
            resources.append(
                {"name": f"dummy{i}", "type": "OCF", "attributes": {"agent": "heartbeat:Dummy"}}
            )
        for i in range(2):
            pidfile = f"/run/bench-app-{g}-{i}.pid"
            resources.append(
                {
                    "name": f"app{i}",
                    "type": "Application",
                    "attributes": {
                        "startProgram": f"sleep 86400.9{g}{i} </dev/null >/dev/null 2>&1 & "
                        f"echo $! > {pidfile}",
                        "stopProgram": f"kill $(cat {pidfile}) && rm -f {pidfile}",
                        "pidFiles": [pidfile],
                    },
                }
            )
        groups.append({"name": f"bench{g}", "type": "Failover", "resources": resources})
    return groups


def not_online(groups: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(group, resource, state, message) of every resource that is not Online."""
    return [
        (name, r["name"], r["state"], r["message"])
        for name, g in groups.items()
        for r in g["resources"]
        if r["state"] != "Online"
    ]


def footprint(
    operator: Operator, agent: GuestAgent, window: float, idle_window: float
) -> dict[str, Any]:
    """One trial on a fresh agent: idle (no groups), then the 50 resources Online."""
    operator.configure({})
    wait_for(lambda: not operator.groups(agent.member), 60, what="no groups left")
    idle = measure(agent, idle_window)
    groups = fifty_resources()
    operator.configure({agent.member: groups})
    started = time.monotonic()
    for g in groups:
        operator.act(agent.member, g["name"], "online")
    try:
        wait_for(
            lambda: all(g["state"] == "Online" for g in operator.groups(agent.member).values()),
            120,
            0.2,
            what="50 resources Online",
        )
    except AssertionError as e:
        raise RuntimeError(f"{e}: {not_online(operator.groups(agent.member))}") from None
    online_took = time.monotonic() - started
    busy = measure(agent, window)
    states = operator.groups(agent.member)
    count = sum(len(s["resources"]) for s in states.values())
    if count != 50 or not_online(states):
        raise RuntimeError(f"not 50 resources Online after the window: {not_online(states)}")
    return {"idle": idle, "resources50": {**busy, "onlineSecondsAll50": round(online_took, 2)}}


def footprints(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trials' figures: each trial's highest RSS, median and p95 over the trials (KiB),
    and whether the p95 with 50 resources meets the goal."""
    idle = [float(t["idle"]["rssKiB"]["max"]) for t in trials]
    busy = [float(t["resources50"]["rssKiB"]["max"]) for t in trials]
    p95 = summary(busy)["p95"]
    return {
        "what": "VmRSS of the agent process, KiB: each trial's highest sample in its window "
        "(one a second), median and p95 over the trials, each trial a fresh agent",
        "idleRssKiB": summary(idle),
        "resources50RssKiB": summary(busy),
        "resources": {"Process": 30, "OCF Dummy": 10, "Application": 10},
        "monitorIntervals": "defaults (60 s online, 300 s offline)",
        "goal": {
            "what": "p95 VmRSS with the 50 resources at most 25 MB (issue 16)",
            "maxBytes": RSS_GOAL_BYTES,
            "p95Bytes": int(p95 * 1024),
            "met": p95 * 1024 <= RSS_GOAL_BYTES,
        },
        "cpuPercentOfOneCore": summary(
            [float(t["resources50"]["cpuPercentOfOneCore"]) for t in trials]),
        "childrenCpuPercentOfOneCore": summary(
            [float(t["resources50"]["childrenCpuPercentOfOneCore"]) for t in trials]),
        "threads": [t["resources50"]["threads"] for t in trials],
        "trials": trials,
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run agent",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20,
                        help="fault detection trials per resource type (0: skip them)")
    parser.add_argument("--footprint-trials", type=int, default=5,
                        help="RSS and CPU trials, each on fresh guests (0: skip them)")
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--idle-window", type=float, default=30.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("hack/bench/run agent: needs root (guest hosts)", file=sys.stderr)
        return 2
    python = agent_python()
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout
    result: dict[str, Any] = {
        "agentPython": version.strip(),
        "guests": len(MEMBERS),
        "heartbeat": "defaults (500 ms interval, 3000 ms peer timeout)",
    }
    with tempfile.TemporaryDirectory(prefix="guestha-bench-agent-") as folder:
        pki = Pki(Path(folder) / "pki")
        boots: list[float] = []
        trials: list[dict[str, Any]] = []
        for trial in range(args.footprint_trials + (1 if args.trials > 0 else 0)):
            latency = args.trials > 0 and trial == 0
            started = time.monotonic()
            with guest_agents(Path(folder) / "guests", pki, MEMBERS, cluster="bench") as agents:
                boots.append(time.monotonic() - started)
                operator = Operator(agents)
                try:
                    if latency:
                        result["faultDetection"] = fault_detection(operator, agents[0],
                                                                   args.trials)
                    else:
                        trials.append(footprint(operator, agents[0], args.window,
                                                args.idle_window))
                finally:
                    operator.close()
        result["bootToAllAgentsServingSeconds"] = summary(boots)
        if trials:
            result["footprint"] = footprints(trials)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
