"""Benchmark: kopf's start-up gate for indexes, alone, as the operator's object count grows.

    hack/bench/run kopfindex [--objects 500,1000,2000,4000] [--batch 20] [--trials 3]

kopf starts no handler until every object of every indexed resource has been indexed
(kopf._core.reactor: the multiplexer makes a toggle per object of the listing in one
ToggleSet; each object's worker indexes it, drops its toggle, then waits on the set until
all are gone). Every drop notifies every waiting worker, so the gate costs about N²
wake-ups for N objects. The operator indexes VMs, VMIs, InGuestClusters, ServiceGroups,
Switchovers and Nodes: 500 clusters of 3 members are some 4,000 objects, and
hack/bench/run operatorscale found a restarted operator silent for minutes at that size.
This replays the gate with kopf's own ToggleSet, objects arriving in chunks of `--batch`
as a listing does, without the apiserver, and prints the seconds until every worker
passed it (median, p95, max over `--trials`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from kopf._cogs.aiokits import aiotoggles

from bench.stats import summary


async def gate(objects: int, batch: int) -> float:
    """Seconds from the listing's first object until every worker passed the gate."""
    toggles = aiotoggles.ToggleSet(all)
    listing = await toggles.make_toggle(name="listing")

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await asyncio.sleep(0)  # the index handlers
        await toggles.drop_toggle(toggle)
        await toggles.wait_for(True)

    started = time.perf_counter()
    workers = []
    for _ in range(0, objects, batch):
        for _ in range(batch):
            toggle = await toggles.make_toggle(name="object")
            workers.append(asyncio.create_task(worker(toggle)))
        await asyncio.sleep(0.001)  # the next chunk of the listing
    await toggles.drop_toggle(listing)
    await asyncio.gather(*workers)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run kopfindex",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--objects", default="500,1000,2000,4000",
                        help="comma-separated object counts")
    parser.add_argument("--batch", type=int, default=20, help="objects per listing chunk")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    counts = [int(c) for c in args.objects.split(",") if c]
    if not counts or min(counts) < 1 or args.batch < 1 or args.trials < 1:
        parser.error("--objects, --batch and --trials must be positive")
    result = {"what": "kopf's index start-up gate (ToggleSet), seconds until every "
                      "object's worker passed it",
              "date": time.strftime("%Y-%m-%d"), "batch": args.batch,
              "seconds": {str(n): summary([asyncio.run(gate(n, args.batch))
                                           for _ in range(args.trials)]) for n in counts}}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
