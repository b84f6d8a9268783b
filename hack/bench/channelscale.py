"""Benchmark: one asyncio process following the event streams of 1,500 agents, as the
operator's per-cluster supervisors will (issue 15: 1,500 members in one process).

    hack/bench/run channelscale [--agents 1500] [--rest 60] [--bursts 5] [--burst 10]
                                [--poll 5] [--out result.json]

The agents are hack/bench/fakeagents.py's (one other process, the real protocol over
mutual TLS, each on its own loopback address); this process holds one EventFollower with
an AsyncAgentClient over AsyncNetworkTransport per member, as the operator does. Figures:

- time to connect all: from the first follow() to every member's first status delivered
  (TCP, TLS handshake, GET /v1/status each), and each member's own time to it;
- RSS of this process before, once all follow, and after the rest window;
- CPU at rest: this process's user+system time over `--rest` seconds of idle long-polls
  (the agents answer each empty poll after `--poll` seconds), in 10 s windows, as % of one
  core;
- events delivered: `--bursts` times, every agent emits `--burst` events at once; events/s
  from the burst command to the last event handed to the callback, each event's latency
  from its emission (wall clock, both processes on this machine), and this process's CPU
  per event over the bursts (the 1 s pause after each included);
- after the agents restart (new streams): the time until every member resynchronised.

The fd limit is raised to the hard limit when needed (two per member in the agents'
process, one here). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fakeagents import raise_fd_limit
from bench.stats import summary
from guestha.channel.aio import (
    AsyncAgentClient,
    AsyncNetworkTransport,
    Contact,
    EventFollower,
    FollowSettings,
    Member,
)
from guestha.channel.transport import operator_context
from guestha.protocol.events import RESOURCE_STATE, EventBatch
from guestha.protocol.status import StatusReport

WINDOW = 10.0  # seconds per CPU sample at rest
MB = 1024 * 1024


def usage(pid: int | str = "self") -> tuple[float, float]:
    """(RSS in MB, user+system CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


class Tally:
    """What the follower handed over."""

    def __init__(self) -> None:
        self.first_status: dict[str, float] = {}
        self.statuses: dict[str, int] = {}
        self.delivered = 0
        self.latencies: list[float] = []
        self.unreachable = 0

    async def on_events(self, name: str, batch: EventBatch | None,
                        status: StatusReport | None) -> None:
        if status is not None:
            self.first_status.setdefault(name, time.monotonic())
            self.statuses[name] = self.statuses.get(name, 0) + 1
        if batch is not None:
            now = time.time()
            for event in batch.events:
                if event.kind == RESOURCE_STATE and "t" in event.data:
                    self.delivered += 1
                    self.latencies.append(now - float(event.data["t"]))

    async def on_contact(self, name: str, contact: Contact) -> None:
        if not contact.reachable:
            self.unreachable += 1


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"channelscale: {what} not within {timeout:g} s")
        await asyncio.sleep(0.02)


class Agents:
    """The fake agents' process and its command line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float = 300.0) -> Any:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            text = await self.proc.stdout.readline()
        if not text:
            raise RuntimeError("channelscale: the fake agents' process ended")
        return json.loads(text)

    async def command(self, text: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fakeagents", "--agents", str(args.agents),
        "--folder", str(folder), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=64 * MB)
    agents = Agents(proc)
    try:
        manifest = await agents.line()
        context = operator_context(manifest["ca"], manifest["operatorCert"],
                                   manifest["operatorKey"])
        transport = AsyncNetworkTransport(context)
        members = {m["name"]: Member("bench", m["name"], m["port"], m["address"])
                   for m in manifest["members"]}
        tally = Tally()
        rss_before, _ = usage()
        follower = EventFollower(
            lambda name: AsyncAgentClient(members[name], transport, 1, timeout=30.0),
            tally.on_events, tally.on_contact, FollowSettings(poll_seconds=args.poll))
        async with follower:
            started = time.monotonic()
            for name in members:
                follower.follow(name)
            await until(lambda: len(tally.first_status) == len(members), 600,
                        "every member's first status")
            connect_all = time.monotonic() - started
            rss_connected, _ = usage()

            windows = []
            for _ in range(max(1, round(args.rest / WINDOW))):
                _, cpu0 = usage()
                t0 = time.monotonic()
                await asyncio.sleep(WINDOW)
                _, cpu1 = usage()
                windows.append(100 * (cpu1 - cpu0) / (time.monotonic() - t0))
            rss_rest, _ = usage()

            rates, latencies = [], []
            _, cpu_before_bursts = usage()
            for _ in range(args.bursts):
                tally.latencies.clear()
                expected = tally.delivered + args.burst * len(members)
                sent = time.monotonic()
                await agents.command(f"burst {args.burst}")
                await until(lambda: tally.delivered >= expected, 300,  # noqa: B023
                            "every event of the burst")
                rates.append(args.burst * len(members) / (time.monotonic() - sent))
                latencies += [1000 * v for v in tally.latencies]
                await asyncio.sleep(1)
            _, cpu_after_bursts = usage()
            burst_cpu = cpu_after_bursts - cpu_before_bursts  # its 1 s pauses included

            counts = dict(tally.statuses)
            restarted = time.monotonic()
            await agents.command("restart")
            await until(lambda: all(tally.statuses.get(n, 0) > counts.get(n, 0)
                                    for n in members), 600, "every member resynchronised")
            resync = time.monotonic() - restarted
            rss_end, _ = usage()
            fake = await agents.command("stats")
        return {
            "what": "one asyncio process following fake agents' event streams "
                    "(guestha.channel.aio EventFollower, Network transport, mutual TLS)",
            "date": time.strftime("%Y-%m-%d"),
            "agents": len(members),
            "poll_seconds": args.poll,
            "connect_all_seconds": round(connect_all, 3),
            "connect_each_seconds": summary([tally.first_status[n] - started for n in members]),
            "rss_mb": {"before": round(rss_before, 1), "connected": round(rss_connected, 1),
                       "after_rest": round(rss_rest, 1), "end": round(rss_end, 1)},
            "cpu_at_rest_percent_of_one_core": summary(windows),
            "events_per_second": summary(rates),
            "event_latency_ms": summary(latencies),
            "burst_events": args.burst * len(members),
            "cpu_microseconds_per_event": round(
                1e6 * burst_cpu / (args.bursts * args.burst * len(members)), 1),
            "restart_resync_seconds": round(resync, 3),
            "unreachable_reports": tally.unreachable,
            "fake_agents_process": {"rss_mb": round(fake["rss_bytes"] / MB, 1),
                                    "cpu_seconds": fake["cpu_seconds"],
                                    "requests": fake["requests"],
                                    "open_connections": fake["open_connections"]},
        }
    finally:
        await agents.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run channelscale",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=1500)
    parser.add_argument("--rest", type=float, default=60.0, help="seconds of CPU at rest")
    parser.add_argument("--bursts", type=int, default=5, help="event bursts (trials)")
    parser.add_argument("--burst", type=int, default=10, help="events per agent per burst")
    parser.add_argument("--poll", type=float, default=FollowSettings().poll_seconds,
                        help="the long-poll wait asked of the agents")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    raise_fd_limit(2 * args.agents + 256)  # the agents' process inherits it
    with tempfile.TemporaryDirectory(prefix="bench-channelscale-") as folder:
        result = asyncio.run(measure(args, Path(folder)))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
