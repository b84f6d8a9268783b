"""Benchmark: one operator holding 1,500 agents' event streams (issue 15's last figure).

    hack/bench/run operatorscale [--clusters 500] [--namespaces 50] [--nodes 3]
                                 [--rest 60] [--settle 30] [--faults 30] [--json out.json]
                                 [--keep-log operator.log]
                                 [--network 127.1.0.0]

A private control plane (etcd, kube-apiserver with API Priority and Fairness on, as on a
production cluster, kube-controller-manager, KubeVirt's real CRDs), without the KubeVirt
simulator: 1,500 guest hosts would not fit. bench.virthandler plays kubelet and
virt-handler through the API (Nodes Ready with renewing Leases; the VMs and their VMIs
Running, each at a fake agent's loopback address) and bench.fakeagents the 1,500 agents
(the real protocol over mutual TLS, each certified by its cluster's CA, which the bench
reads from the operator's `<cluster>-guestha-ca` Secret). `--clusters` InGuestClusters of
3 members spread over `--namespaces` namespaces, one Failover ServiceGroup each (one
Process resource). The operator runs as the control-plane tests run it (testbed.devcluster:
`python -m guestha.controller.main`, its own ServiceAccount and RBAC, the injection webhook
served). Injection never blocks a VMI here: the VMs and VMIs are created before any
InGuestCluster exists, so their namespaces are not yet labelled `guestha.io/injection`
(the operator labels a namespace when a cluster appears in it) and the webhook is not
called for them.

Figures (one JSON object; seconds, MB, % of one core):
- `converge`: from the InGuestClusters' creation until every cluster's status shows its 3
  agents Connected and every group Online (and the same from the fake agents listening);
- `baseline`: the apiserver's requests per second before the operator started (the bench's
  kubelets and virt-handlers, kube-controller-manager), so the operator's share shows;
- `rest` (after `--settle`, over `--rest` seconds, nothing changing): the operator's RSS,
  CPU in 10 s windows (from /proc), the apiserver's requests per second by verb and
  resource (`apiserver_request_total`, every client: the baseline is the rest), the
  operator's own requests per second (FlowSchema `service-accounts`: the operator is the
  only ServiceAccount outside kube-system here; the bench is `system:masters`, exempt),
  and the status writes per minute;
- `failover`: from a fake agent's fault events (a resource Faulted where the group is
  online) to the online command for that group reaching another member, `--faults`
  faults, one per cluster, spread over the clusters, one at a time;
- `restart`: SIGTERM, the old process's exit, a new start: until every agent was asked for
  its status by the new process, until the API shows every agent Connected and every
  group Online; then the same rest figures after `--settle`;
- 429s: the apiserver's rejections (`apiserver_flowcontrol_rejected_requests_total`, and
  `apiserver_request_total` code 429) over the whole run, and the operator log's lines
  that mention a 429.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import apimetrics
from bench.channelscale import usage
from bench.fakeagents import VERSION as FAKE_AGENT_VERSION
from bench.fakeagents import addresses, raise_fd_limit
from bench.stats import summary
from bench.virthandler import NodeSide, namespaces
from guestha.controller.credentials import CA_CERT, CA_KEY, CLUSTER_LABEL, secret_name
from guestha.controller.userdata import TEST_BUNDLE_VERSION_ENV
from kubevirtsim.api import Api
from testbed.controlplane import NODE_MONITOR_GRACE_SECONDS
from testbed.devcluster import OPERATOR, DevCluster

GROUP = "app"
MEMBERS = 3
WINDOW = 10.0  # seconds per CPU sample
TIMEOUT = 600.0  # the longest any phase may take, by default (--timeout)
METRICS = ("apiserver_request_total", "apiserver_flowcontrol_dispatched_requests_total",
           "apiserver_flowcontrol_rejected_requests_total")
OPERATOR_FLOW_SCHEMA = "service-accounts"
STATUS_KINDS = ("inguestclusters", "servicegroups", "switchovers")


def in_guest_cluster(namespace: str, name: str, members: list[str]) -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"members": [{"name": m} for m in members]}}


def group_name(cluster: str) -> str:
    return f"{cluster}-{GROUP}"  # a namespace holds several clusters' groups


def service_group(namespace: str, cluster: str, members: list[str]) -> dict[str, Any]:
    return {"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup",
            "metadata": {"name": group_name(cluster), "namespace": namespace},
            "spec": {"cluster": cluster, "type": "Failover",
                     "systems": [{"member": m, "priority": i} for i, m in enumerate(members)],
                     "resources": [{"name": "app", "type": "Process", "restartLimit": 0,
                                    "attributes": {"command": ["/bin/sleep", "86400"]}}]}}


class Layout:
    """Which cluster lives where: namespaces, members, nodes, addresses."""

    def __init__(self, clusters: int, spaces: int, nodes: int, network: str) -> None:
        self.nodes = [f"node-{i + 1}" for i in range(nodes)]
        self.namespaces = [f"scale-{i:03d}" for i in range(min(spaces, clusters))]
        self.clusters = [(self.namespaces[i % len(self.namespaces)], f"c{i:04d}")
                         for i in range(clusters)]
        pool = iter(addresses(network, clusters * MEMBERS))
        self.members = {c: [f"{c[1]}-{j}" for j in range(MEMBERS)] for c in self.clusters}
        self.placed = [(ns, m, self.nodes[j % nodes], next(pool))
                       for (ns, name), ms in self.members.items() for j, m in enumerate(ms)]


class FakeAgents:
    """bench.fakeagents in a process of its own, and its command line."""

    def __init__(self, clusters_file: Path, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fakeagents", "--clusters", str(clusters_file),
             "--folder", str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        self.manifest = self._line()

    def _line(self) -> Any:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError("operatorscale: the fake agents' process ended")
        return json.loads(text)

    def command(self, text: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Peak:
    """The operator's highest RSS, sampled every second in a thread (the pod's memory
    limit must hold the peak, not only the RSS at rest); `reset` starts a new phase."""

    def __init__(self, pid: Callable[[], int]) -> None:
        self.pid = pid
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-peak", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.mb = max(self.mb, usage(self.pid())[0])
            except (OSError, KeyError, IndexError, ValueError):
                continue  # between two operator processes

    def reset(self) -> float:
        peak, self.mb = self.mb, 0.0
        return round(peak, 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def wait(what: str, test: Callable[[], Any], timeout: float,
         every: float = 1.0, seen: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = test()
        if found:
            return found
        time.sleep(every)
    last = f"; last seen: {seen()}" if seen is not None else ""
    raise TimeoutError(f"operatorscale: {what} not within {timeout:.0f} s{last}")


class Bench:
    """The cluster under test, the node side, the fake agents, and what is measured."""

    def __init__(self, cluster: DevCluster, layout: Layout, timeout: float) -> None:
        self.cluster = cluster
        self.timeout = timeout  # the longest a phase may take
        self.layout = layout
        self.api = Api(cluster.kubeconfig)
        self.nodes = NodeSide(self.api, layout.nodes, NODE_MONITOR_GRACE_SECONDS)
        self.agents: FakeAgents | None = None
        self.last_seen = (0, 0)  # (clusters all Connected, groups Online) when last read

    # -- reading the API and the operator

    def scrape(self) -> apimetrics.Samples:
        text = self.cluster.control_plane.get("/metrics", timeout=30).decode()
        return apimetrics.parse(text, METRICS)

    def pid(self) -> int:
        return self.cluster.control_plane.state().pids[OPERATOR]

    def converged(self) -> tuple[int, int]:
        """(clusters whose 3 agents show Connected, groups Online), from the API."""
        igcs = self.api.request("GET", "/apis/guestha.io/v1alpha1/inguestclusters")["items"]
        sgs = self.api.request("GET", "/apis/guestha.io/v1alpha1/servicegroups")["items"]
        connected = sum(1 for c in igcs if [m.get("agent") for m in (c.get("status") or {})
                                            .get("members") or ()] == ["Connected"] * MEMBERS)
        online = sum(1 for g in sgs if (g.get("status") or {}).get("state") == "Online")
        return connected, online

    def all_converged(self) -> bool:
        want = len(self.layout.clusters)
        self.last_seen = self.converged()
        return self.last_seen == (want, want)

    def fencings(self) -> int:
        """Fencings the operator recorded (status.fencings of every InGuestCluster): every
        fake agent stays healthy, so each one is a member the operator took for lost."""
        igcs = self.api.request("GET", "/apis/guestha.io/v1alpha1/inguestclusters")["items"]
        return sum(int((c.get("status") or {}).get("fencings") or 0) for c in igcs)

    def ca_secrets(self) -> list[dict[str, Any]]:
        listed = self.api.request("GET", "/api/v1/secrets",
                                  {"labelSelector": CLUSTER_LABEL})["items"]
        return [s for s in listed if s["metadata"]["name"] == secret_name(
            s["metadata"]["labels"][CLUSTER_LABEL])]

    def events_since(self, wall: float) -> dict[str, int]:
        """The operator's Events (counted by reason) last posted at or after `wall`."""
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(wall)))
        counts: dict[str, int] = {}
        for e in self.api.request("GET", "/api/v1/events")["items"]:
            stamp = e.get("lastTimestamp") or e.get("eventTime") or ""
            if stamp >= since and e["involvedObject"].get("apiVersion", "").startswith(
                    "guestha.io/"):
                counts[e["reason"]] = counts.get(e["reason"], 0) + int(e.get("count") or 1)
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def rest(self, seconds: float) -> dict[str, Any]:
        """The operator's RSS and CPU over `seconds` of rest, and the apiserver's counts."""
        pid = self.pid()
        before = self.scrape()
        started = time.monotonic()
        windows = []
        for _ in range(max(1, round(seconds / WINDOW))):
            _, cpu0 = usage(pid)
            t0 = time.monotonic()
            time.sleep(WINDOW)
            _, cpu1 = usage(pid)
            windows.append(100 * (cpu1 - cpu0) / (time.monotonic() - t0))
        rss, _ = usage(pid)
        after = self.scrape()
        span = time.monotonic() - started
        return {"seconds": round(span, 1), "rss_mb": round(rss, 1),
                "cpu_percent_of_one_core": summary(windows),
                **api_figures(before, after, span)}

    # -- the phases

    def prepare(self) -> None:
        self.nodes.register()
        self.nodes.start()
        namespaces(self.api, self.layout.namespaces)
        self.nodes.run_vms(self.layout.placed)

    def create_clusters(self) -> None:
        for (ns, name), members in self.layout.members.items():
            self.api.request("POST", f"/apis/guestha.io/v1alpha1/namespaces/{ns}/"
                             "inguestclusters", body=in_guest_cluster(ns, name, members))
            self.api.request("POST", f"/apis/guestha.io/v1alpha1/namespaces/{ns}/"
                             "servicegroups", body=service_group(ns, name, members))

    def start_agents(self, folder: Path) -> None:
        want = len(self.layout.clusters)
        secrets = wait("every cluster's CA Secret",
                       lambda: (found := self.ca_secrets()) and len(found) >= want and found,
                       self.timeout)
        by_cluster = {(s["metadata"]["namespace"], s["metadata"]["labels"][CLUSTER_LABEL]): s
                      for s in secrets}
        addresses_of = {(ns, m): a for ns, m, _, a in self.layout.placed}
        clusters = []
        for (ns, name), members in self.layout.members.items():
            data = by_cluster[(ns, name)]["data"]
            clusters.append({
                "cluster": name,
                "caCert": base64.b64decode(data[CA_CERT]).decode(),
                "caKey": base64.b64decode(data[CA_KEY]).decode(),
                "members": [{"name": m, "address": addresses_of[(ns, m)]} for m in members]})
        path = folder / "clusters.json"
        path.write_text(json.dumps(clusters))
        self.agents = FakeAgents(path, folder / "agents")

    def faults(self, count: int) -> list[float]:
        assert self.agents is not None
        clusters = self.layout.clusters
        step = max(1, len(clusters) // max(1, count))
        chosen = [clusters[i * step % len(clusters)] for i in range(min(count, len(clusters)))]
        agents = self.agents
        for i, (_, name) in enumerate(chosen):
            made = agents.command(f"fault {name} {group_name(name)}")
            if "error" in made:
                raise RuntimeError(f"operatorscale: fault in {name}: {made['error']}")

            def answered(i: int = i) -> bool:
                return agents.command("failovers")["seconds"][i] is not None

            wait(f"the failover of {name}'s group", answered, 60, 0.05)
            time.sleep(0.5)
        seconds = agents.command("failovers")["seconds"]
        return [float(s) for s in seconds]

    def restart(self) -> dict[str, Any]:
        assert self.agents is not None
        want = MEMBERS * len(self.layout.clusters)
        log = self.cluster.log_of(OPERATOR)
        offset = log.stat().st_size
        before = self.scrape()
        self.agents.command("mark")
        wall = time.time()
        t0 = time.monotonic()
        self.cluster.stop_process(OPERATOR)
        exited = time.monotonic()
        self.cluster.start_operator(timeout=300, env=OPERATOR_ENV)
        ready = time.monotonic()
        wait("every agent asked by the new operator",
             lambda: self.agents is not None and self.agents.command("asked")["asked"] >= want,
             self.timeout, every=0.1)
        asked = time.monotonic()
        wait("every agent Connected and every group Online after the restart",
             self.all_converged, self.timeout,
             seen=lambda: f"{self.last_seen}, fencings {self.fencings()}")
        converged = time.monotonic()
        after = self.scrape()
        text = log.read_bytes()[offset:].decode(errors="replace")
        return {"sigterm_to_exit_seconds": round(exited - t0, 2),
                "start_to_liveness_seconds": round(ready - exited, 2),
                "start_to_every_agent_asked_seconds": round(asked - exited, 2),
                "start_to_api_converged_seconds": round(converged - exited, 2),
                "log_lines_mentioning_429": count_429(text),
                "events_by_reason": self.events_since(wall),
                "api_during_restart": api_figures(before, after, converged - t0)}


def count_429(text: str) -> int:
    return sum(1 for line in text.splitlines() if "429" in line or "Too Many Requests" in line)


def api_figures(before: apimetrics.Samples, after: apimetrics.Samples,
                span: float) -> dict[str, Any]:
    """What the apiserver counted between two scrapes `span` seconds apart."""
    requests = apimetrics.delta(before, after, "apiserver_request_total")
    dispatched = apimetrics.delta(before, after,
                                  "apiserver_flowcontrol_dispatched_requests_total")
    rejected = apimetrics.delta(before, after, "apiserver_flowcontrol_rejected_requests_total")
    status_writes = apimetrics.total(requests, lambda lb: lb.get("subresource") == "status" and
                                     lb.get("resource") in STATUS_KINDS and
                                     lb.get("verb") in ("PATCH", "UPDATE"))
    return {
        "requests_per_second": round(apimetrics.total(requests) / span, 3),
        "requests_per_second_by_verb_resource": apimetrics.by(
            requests, apimetrics.request_key, span),
        "operator_requests_per_second": round(apimetrics.total(
            dispatched, lambda lb: lb.get("flow_schema") == OPERATOR_FLOW_SCHEMA) / span, 3),
        "requests_per_second_by_flow_schema": apimetrics.by(
            dispatched, lambda lb: lb.get("flow_schema", "?"), span),
        "guestha_status_writes_per_minute": round(60 * status_writes / span, 2),
        "responses_429": apimetrics.total(requests, lambda lb: lb.get("code") == "429"),
        "flowcontrol_rejected": apimetrics.by(
            rejected, lambda lb: f"{lb.get('flow_schema')}/{lb.get('reason')}"),
    }


def converge_writes(before: apimetrics.Samples, after: apimetrics.Samples) -> dict[str, Any]:
    """Every request of the converge phase (counts, not rates) by verb and resource, the
    429s among them, and the writes to guestha's objects other than their status (kopf's
    bookkeeping: finalizers, progress and last-handled annotations; the bench writes none)."""
    requests = apimetrics.delta(before, after, "apiserver_request_total")
    return {"requests_by_verb_resource": apimetrics.by(requests, apimetrics.request_key),
            "responses_429": apimetrics.total(requests, lambda lb: lb.get("code") == "429"),
            "guestha_non_status_patches": apimetrics.total(
                requests, lambda lb: lb.get("verb") == "PATCH" and not lb.get("subresource")
                and lb.get("resource") in STATUS_KINDS)}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": model,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


# The operator's agent bundle carries the fake agents' version: the agents are up to date,
# as at rest after a rollout, so nothing here is an upgrade (which the fake agents cannot
# take: every cluster would retry one and fail, AgentUpgradeFailed, a cost that is not
# the rest's). A rollout at scale is hack/bench/rollout's.
OPERATOR_ENV = {TEST_BUNDLE_VERSION_ENV: FAKE_AGENT_VERSION}


def measure(bench: Bench, args: argparse.Namespace, result: dict[str, Any], peak: Peak) -> None:
    """The phases, each adding its figures to `result` as it ends."""
    cluster = bench.cluster
    t = time.monotonic()
    bench.prepare()
    result["vms_running_seconds"] = round(time.monotonic() - t, 1)
    base0, t = bench.scrape(), time.monotonic()
    time.sleep(args.baseline)
    result["baseline"] = api_figures(base0, bench.scrape(), time.monotonic() - t)
    cluster.start_operator(timeout=300, env=OPERATOR_ENV)
    peak.reset()
    start0 = bench.scrape()
    t0 = time.monotonic()
    bench.create_clusters()
    created = time.monotonic()
    bench.start_agents(cluster.folder.parent)
    listening = time.monotonic()
    wait("every agent Connected and every group Online", bench.all_converged, bench.timeout,
         seen=lambda: f"(clusters all Connected, groups Online) = {bench.last_seen}, "
                      f"fencings {bench.fencings()}")
    done = time.monotonic()
    result["converge"] = {
        "create_objects_seconds": round(created - t0, 1),
        "ca_secrets_and_agents_listening_seconds": round(listening - t0, 1),
        "created_to_converged_seconds": round(done - t0, 1),
        "agents_listening_to_converged_seconds": round(done - listening, 1),
        "rss_mb": round(usage(bench.pid())[0], 1), "fencings": bench.fencings(),
        "api": converge_writes(start0, bench.scrape())}
    time.sleep(args.settle)
    result["converge"]["peak_rss_mb"] = peak.reset()
    result["rest"] = bench.rest(args.rest)
    if args.faults:
        result["failover_fault_to_online_command_seconds"] = summary(
            bench.faults(args.faults))
    peak.reset()
    result["restart"] = bench.restart()
    time.sleep(args.settle)
    result["restart"]["peak_rss_mb"] = peak.reset()
    result["rest_after_restart"] = bench.rest(args.rest)
    assert bench.agents is not None
    fake = bench.agents.command("stats")
    result["fake_agents_process"] = {"rss_mb": round(fake["rss_bytes"] / 2**20, 1),
                                     "cpu_seconds": fake["cpu_seconds"],
                                     "open_connections": fake["open_connections"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.clusters, args.namespaces, args.nodes, args.network)
    result: dict[str, Any] = {
        "what": "one guestha operator holding every member's agent event stream (fake "
                "agents, the real protocol over mutual TLS) with its control plane",
        "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "clusters": len(layout.clusters), "members": MEMBERS * len(layout.clusters),
        "namespaces": len(layout.namespaces), "nodes": len(layout.nodes),
        "priority_and_fairness": True}
    with tempfile.TemporaryDirectory(prefix="bench-operatorscale-") as scratch:
        folder = Path(scratch)
        cluster = DevCluster(folder / "cluster")
        bench: Bench | None = None
        peak: Peak | None = None
        try:
            cluster.control_plane.start_apiserver(priority_and_fairness=True)
            cluster.install_crds()
            cluster.control_plane.start_controller_manager()
            bench = Bench(cluster, layout, args.timeout)
            first = bench.scrape()
            peak = Peak(bench.pid)
            try:
                measure(bench, args, result, peak)
            except (TimeoutError, RuntimeError, SystemExit, KeyboardInterrupt) as e:
                result["error"] = f"{type(e).__name__}: {e}"  # the figures so far, and why
            result["fencings_at_end"] = bench.fencings()
            whole = api_figures(first, bench.scrape(), 1.0)
            result["whole_run_429"] = {"responses_429": whole["responses_429"],
                                       "flowcontrol_rejected": whole["flowcontrol_rejected"],
                                       "operator_log_lines": count_429(
                                           cluster.log_of(OPERATOR).read_text(errors="replace"))}
            result["node_side_writes"] = bench.nodes.writes
        finally:
            if peak is not None:
                peak.stop()
            if bench is not None:
                if bench.agents is not None:
                    bench.agents.stop()
                bench.nodes.stop()
                bench.api.close()
            if args.keep_log is not None:
                log = cluster.log_of(OPERATOR)
                if log.exists():
                    shutil.copyfile(log, args.keep_log)
            cluster.down()
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/bench/run operatorscale",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clusters", type=int, default=500, help="InGuestClusters of 3")
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--network", default="127.1.0.0",
                        help="the fake agents' addresses: a /16 of 127/8 no one else uses")
    parser.add_argument("--baseline", type=float, default=30.0,
                        help="seconds of API counts before the operator starts")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds left after convergence before the rest window")
    parser.add_argument("--rest", type=float, default=60.0, help="seconds at rest measured")
    parser.add_argument("--faults", type=int, default=30, help="failovers timed (0: none)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here at the end")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="the longest a phase may take, in seconds")
    args = parser.parse_args()
    if not 1 <= args.clusters <= 20000 or args.namespaces < 1 or args.nodes < 1:
        parser.error("--clusters 1..20000, --namespaces and --nodes at least 1")
    # a TERM ends the run through its `finally`, so the control plane is taken down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit(4 * MEMBERS * args.clusters + 1024)  # the operator inherits it
    figures = run(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
