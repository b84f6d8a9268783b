"""Benchmark: the agent channel's round trip over VSOCK vs Network, to the same agent.

    hack/bench/run channel --requests 200 [--connects 20] [--out result.json]

A local devcluster with the KubeVirt simulator boots one runStrategy Always VM
(`autoattachVSOCK: true`) whose cloud-init installs the agent as the operator's injection
will (the zipapp of guestha.cloudinit.bundle, agent.json, TLS files, a systemd unit).
Then, with guestha.channel's own clients (the operator ServiceAccount's token for the
apiserver), for each transport: the time of a first `GET /v1/status` on a fresh
connection (TCP or websocket, TLS handshake, request; `--connects` times), then
`--requests` round trips of `GET /v1/status` on one kept-alive connection (after a
warm-up). Network and VSOCK blocks alternate so that drift hits both alike.

The agent has `transport: Network` and listens on 0.0.0.0: the simulator's vsock endpoint
dials the guest's loopback, so both transports reach the very same agent process and the
difference is the transport alone (on KubeVirt, VSOCK reaches an AF_VSOCK listener
instead). VSOCK's path: websocket to the kube-apiserver, its aggregation proxy to the
simulator's virt-api (TLS), and virt-api's TCP to the guest, with guestha's TLS inside.

The guest comes from tests/kits/agentvms.py, as the guests of
tests/controlplane/test_channel_transports.py do, so the tests and the benchmark boot the
same thing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import percentile
from guestha.channel.client import AgentClient
from guestha.channel.transport import (
    ChannelError,
    Member,
    NetworkTransport,
    Transport,
    VsockTransport,
    operator_context,
)
from guestha.cloudinit import bundle
from guestha.protocol.constants import AGENT_PORT
from kits.agentvms import kube_access, user_data, userdata_secret, vm
from kits.pki import Pki


def stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def first_request(member: Member, transport: Transport) -> float:
    with AgentClient(member, transport) as c:
        t0 = time.perf_counter()
        c.status()
        return time.perf_counter() - t0


def round_trips(client: AgentClient, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.status()
        times.append(time.perf_counter() - t0)
    return times


def wait_serving(member: Member, transport: Transport, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            first_request(member, transport)
            return
        except ChannelError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent never answered: {exc}") from None
            time.sleep(0.25)


def run(folder: Path, requests: int, connects: int, blocks: int) -> dict[str, Any]:
    from testbed.devcluster import DevCluster

    cluster = DevCluster(folder / "cluster")
    cluster.up(operator=False)
    try:
        ns = "bench-channel"
        cluster.kubectl("create", "namespace", ns)
        pki = Pki(folder / "pki")
        data = user_data("bench", "bench-chan", "Network", pki, bundle.build().data)
        objects = [
            userdata_secret("bench-chan-userdata", data),
            vm("bench-chan", "bench-chan-userdata"),
        ]
        cluster.kubectl(
            "apply",
            "-n",
            ns,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )
        deadline = time.monotonic() + 120
        vmi: dict[str, Any] = {}
        while time.monotonic() < deadline:
            out = cluster.kubectl("get", "vmi", "bench-chan", "-n", ns, "-o", "json", check=False)
            if out.returncode == 0:
                vmi = json.loads(out.stdout)
                if vmi.get("status", {}).get("phase") == "Running" and vmi["status"].get(
                    "interfaces"
                ):
                    break
            time.sleep(0.2)
        else:
            raise TimeoutError("VMI bench-chan did not run")
        member = Member.from_vmi(vmi, AGENT_PORT)
        context = operator_context(pki.ca_file, *pki.operator)
        transports: dict[str, Transport] = {
            "Network": NetworkTransport(context),
            "VSOCK": VsockTransport(context, kube_access(cluster.operator_kubeconfig())),
        }
        for transport in transports.values():
            wait_serving(member, transport)
        firsts: dict[str, list[float]] = {name: [] for name in transports}
        trips: dict[str, list[float]] = {name: [] for name in transports}
        clients = {name: AgentClient(member, t) for name, t in transports.items()}
        try:
            for client in clients.values():
                round_trips(client, 20)  # warm-up: connection open, caches hot
            per_block = -(-requests // blocks)
            for _ in range(blocks):
                for name, client in clients.items():
                    trips[name] += round_trips(client, per_block)
            for _ in range(connects):
                for name, transport in transports.items():
                    firsts[name].append(first_request(member, transport))
        finally:
            for client in clients.values():
                client.close()
        return {
            "what": "GET /v1/status to one agent in a simulator guest host",
            "date": time.strftime("%Y-%m-%d"),
            "transports": {
                name: {
                    "round_trip_keepalive": stats(trips[name]),
                    "first_request_connect_handshake": stats(firsts[name]),
                }
                for name in transports
            },
        }
    finally:
        cluster.down()


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run channel",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="round trips per transport")
    parser.add_argument("--connects", type=int, default=20, help="fresh connections each")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.requests < 100:
        parser.error("--requests: at least 100")
    with tempfile.TemporaryDirectory(prefix="bench-channel-") as folder:
        result = run(Path(folder), args.requests, args.connects, args.blocks)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
