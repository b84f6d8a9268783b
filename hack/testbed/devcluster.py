"""The whole local development cluster: control plane, CRDs, KubeVirt simulator, operator.

`hack/devcluster up` and the test suite's session fixture both go through `DevCluster`,
so what developers run by hand is what the tests run. `up` returns only when everything
it started is ready for a client: the apiserver, kube-controller-manager's controllers,
the simulator's nodes and its aggregated `subresources.kubevirt.io` API, the operator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from testbed import processes
from testbed.controlplane import NODE_MONITOR_GRACE_SECONDS, ControlPlane, free_port

REPO = Path(__file__).resolve().parents[2]
# KubeVirt's CRDs and example manifests, vendored (third_party/kubevirt/README.md)
KUBEVIRT_DIR = REPO / "third_party" / "kubevirt"
SIMULATOR = "kubevirtsim"
OPERATOR = "guestha-operator"
SUBRESOURCES = "/apis/subresources.kubevirt.io/v1"


def kubevirt_examples() -> list[Path]:
    """KubeVirt's own example VM and VMI manifests."""
    return sorted((KUBEVIRT_DIR / "examples").glob("*.yaml"))


def crd_files() -> list[Path]:
    """KubeVirt's real CRDs first, then guestha's own."""
    return [KUBEVIRT_DIR / "crds.yaml", *sorted((REPO / "crds").glob("*.yaml"))]


class DevCluster:
    """A control plane plus the processes that make it a KubeVirt cluster with guestha."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.control_plane = ControlPlane(self.folder)
        self.sim_state = self.folder / "kubevirtsim"

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, input=input, check=check)

    def _env(self) -> dict[str, str]:
        path = [str(REPO / "operator"), str(REPO / "hack")]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        return dict(os.environ, PYTHONPATH=os.pathsep.join(path),
                    KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")

    def install_crds(self) -> None:
        files = [a for f in crd_files() for a in ("-f", str(f))]
        self.kubectl("apply", "--server-side", "--force-conflicts", *files)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *files)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        state = self.control_plane.state()
        if name in state.pids and processes.alive(state.pids[name]):
            return
        state.pids[name] = processes.spawn(argv, self.control_plane.logs / f"{name}.log",
                                           env={**self._env(), **(env or {})}, cwd=REPO)
        self.control_plane._save(state)

    def start_simulator(self, heartbeat_seconds: float = 15.0) -> None:
        """The KubeVirt simulator; its nodes renew their Leases often enough for the node
        lifecycle controller's grace period (NODE_MONITOR_GRACE_SECONDS)."""
        self.sim_state.mkdir(parents=True, exist_ok=True)
        self._start(SIMULATOR, [sys.executable, "-m", "kubevirtsim",
                                "--kubeconfig", str(self.kubeconfig),
                                "--state-dir", str(self.sim_state),
                                "--heartbeat-seconds", str(heartbeat_seconds),
                                "--node-lease-seconds", str(NODE_MONITOR_GRACE_SECONDS)])

    def _simulator_ready(self) -> str:
        """What the simulator still lacks before clients can use it ("" once ready): nodes
        that are Ready and carry virt-handler's heartbeat, and virt-api's aggregated API
        answering through the apiserver."""
        nodes = self.kubectl("get", "nodes", "-l", "kubevirtsim.guestha.io/simulated=true",
                             "-o", "json", check=False)
        if nodes.returncode != 0:
            return f"nodes: {nodes.stderr.strip()}"
        items = json.loads(nodes.stdout)["items"]
        ready = [
            n for n in items
            if "kubevirt.io/heartbeat" in (n["metadata"].get("annotations") or {})
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions") or [])
        ]
        if not ready:
            return "no simulated node is Ready with virt-handler's heartbeat yet"
        try:
            self.control_plane.get(SUBRESOURCES, timeout=5)
        except urllib.error.HTTPError as e:
            return f"{SUBRESOURCES}: {e.code} {e.reason}"
        except OSError as e:
            return f"{SUBRESOURCES}: {e}"
        return ""

    def wait_simulator_ready(self, timeout: float = 60.0) -> None:
        """Until VMIs can be scheduled on the simulated nodes and virt-api's subresources
        (start, stop, vsock, ...) answer through the apiserver."""
        deadline = time.monotonic() + timeout
        missing = "not asked yet"
        while time.monotonic() < deadline:
            self._check_alive(SIMULATOR)
            missing = self._simulator_ready()
            if not missing:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the KubeVirt simulator was not ready within {timeout:.0f}s "
                           f"({missing}); see {self.control_plane.logs / (SIMULATOR + '.log')}")

    def _check_alive(self, name: str) -> None:
        pid = self.control_plane.state().pids.get(name)
        if pid is None or not processes.alive(pid):
            log = (self.control_plane.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; its log ends:\n{log}")

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig with the operator ServiceAccount's token: it runs with its own RBAC."""
        manifests = REPO / "manifests" / "base"
        self.kubectl("apply", "-f", str(manifests / "namespace.yaml"),
                     "-f", str(manifests / "rbac.yaml"))
        token = self.kubectl("create", "token", "guestha-operator", "-n", "guestha-system",
                             "--duration=8760h").stdout.strip()
        path = self.folder / "kubeconfig-operator"
        self.control_plane.write_token_kubeconfig(path, token, "guestha-operator")
        return path

    def liveness_file(self, name: str = OPERATOR) -> Path:
        """Where operator process `name`'s liveness URL is recorded (its port is picked at
        start)."""
        return self.folder / ("operator-liveness" if name == OPERATOR else f"{name}-liveness")

    def metrics_file(self, name: str = OPERATOR) -> Path:
        """Where operator process `name`'s /metrics URL is recorded (its port is picked at
        start)."""
        return self.folder / ("operator-metrics" if name == OPERATOR else f"{name}-metrics")

    @property
    def operator_liveness(self) -> Path:
        return self.liveness_file(OPERATOR)

    def start_operator(self, timeout: float = 60.0, name: str = OPERATOR,
                       env: dict[str, str] | None = None, kubeconfig: Path | None = None,
                       namespace: str = "guestha-system", args: Sequence[str] = (),
                       wrapper: Sequence[str] = ()) -> None:
        """An operator process with its own ServiceAccount; returns once kopf's liveness
        probe answers, which kopf serves only after the operator's startup handlers ran.
        Another `name` starts one more replica (its log is `<name>.log`), as the manifests'
        second replica: the replicas elect one leader through their Lease. The injection
        webhook's configuration points at the replica that started last. `env`: more
        environment variables for it (a test hook, e.g. GUESTHA_TEST_BUNDLE_VERSION).
        `kubeconfig` (another ServiceAccount's, e.g. a Helm release's), `namespace` (its
        own: the webhook CA's Secret and the Lease, as a pod's POD_NAMESPACE) and `args`
        (more command-line options) run it as another install would. `wrapper`: a command
        that runs the operator's command line given after it (e.g. in namespaces of its
        own, as a pod)."""
        state = self.control_plane.state()
        if not (name in state.pids and processes.alive(state.pids[name])):
            url = f"http://127.0.0.1:{free_port()}/healthz"
            self.liveness_file(name).write_text(url)
            metrics = f"127.0.0.1:{free_port()}"
            self.metrics_file(name).write_text(f"http://{metrics}/metrics")
            env = {**(env or {}), "POD_NAMESPACE": namespace,
                   "KUBECONFIG": str(kubeconfig or self.operator_kubeconfig())}
            # The injection webhook: the apiserver runs on this host, outside any pod
            # network, so it reaches the operator at a 127.0.0.1 URL.
            webhook = f"127.0.0.1:{free_port()}"
            self._start(name, [*wrapper, sys.executable, "-m", "guestha.controller.main",
                               "--liveness", url, "--namespace", namespace,
                               "--webhook-listen", webhook, "--metrics-listen", metrics,
                               "--webhook-url", f"https://{webhook}", *args], env)
        self.wait_operator_ready(timeout, name)

    def wait_operator_ready(self, timeout: float, name: str = OPERATOR) -> None:
        url = self.liveness_file(name).read_text().strip()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"the operator's liveness probe {url} did not answer within "
                           f"{timeout:.0f}s ({last}); see "
                           f"{self.control_plane.logs / (name + '.log')}")

    def up(self, simulator: bool = True, operator: bool = True) -> None:
        """Start what is not running and return when all of it is ready: the apiserver,
        the CRDs, kube-controller-manager (after the CRDs, so that its garbage collector
        watches KubeVirt's kinds from the start), the simulator, the operator."""
        try:
            self.control_plane.start_apiserver()
            self.install_crds()
            self.control_plane.start_controller_manager()
            if simulator:
                self.start_simulator()
                self.wait_simulator_ready()
            if operator:
                self.start_operator()
        except BaseException:
            self.down()  # a half-started cluster is not left behind
            raise

    def stop_process(self, name: str, timeout: float = 30.0) -> None:
        state = self.control_plane.state()
        pid = state.pids.pop(name, None)
        if pid is not None:
            processes.stop(pid, timeout)
        self.control_plane._save(state)

    def kill_process(self, name: str) -> None:
        """SIGKILL process `name` (its whole process group), as a crash: no clean shutdown,
        so an operator keeps its Lease until the Lease expires."""
        state = self.control_plane.state()
        pid = state.pids.pop(name, None)
        if pid is not None:
            processes.kill(pid)
        self.control_plane._save(state)

    def log_of(self, name: str) -> Path:
        """Process `name`'s log (appended to by every start of that name)."""
        return self.control_plane.logs / f"{name}.log"

    def down(self, keep_data: bool = False) -> None:
        """Stop in reverse: operator(s), simulator (it powers off its guests),
        kube-controller-manager, apiserver, etcd;
        then forget the cluster's objects (etcd's data), unless `keep_data`: guests cannot
        outlive the simulator, so the next `up` starts from nothing, as a new cluster does."""
        for name in sorted(self.control_plane.state().pids):
            if name.startswith(OPERATOR):  # every replica
                self.stop_process(name)
        self.stop_process(SIMULATOR)
        if self.sim_state.exists():
            from kubevirtsim import guesthost  # the sweep for a simulator that died uncleanly

            guesthost.cleanup_stale(self.sim_state)
            guesthost.teardown_network()
        self.control_plane.down()
        if not keep_data:
            shutil.rmtree(self.folder / "etcd", ignore_errors=True)
            shutil.rmtree(self.sim_state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/devcluster",
        description="a local KubeVirt-like cluster: kube-apiserver, kube-controller-manager "
        "and etcd, KubeVirt's CRDs, the KubeVirt simulator and the guestha operator",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=REPO / ".devcluster",
                        help="folder for its files (default: .devcluster in the checkout)")
    parser.add_argument("--no-simulator", action="store_true", help="do not start the simulator")
    parser.add_argument("--keep-data", action="store_true",
                        help="down: keep etcd's data, so the next up finds the same objects")
    parser.add_argument("--no-operator", action="store_true", help="do not start the operator")
    args = parser.parse_args(argv)
    cluster = DevCluster(args.dir)
    if args.command == "up":
        t0 = time.monotonic()
        cluster.up(simulator=not args.no_simulator, operator=not args.no_operator)
        print(f"devcluster up in {time.monotonic() - t0:.1f}s; "
              f"kubeconfig: {cluster.kubeconfig}", file=sys.stderr)
    elif args.command == "down":
        cluster.down(keep_data=args.keep_data)
        print("devcluster down", file=sys.stderr)
    else:
        for name, pid in sorted(cluster.control_plane.state().pids.items()):
            print(f"{name}\t{pid}\t{'running' if processes.alive(pid) else 'dead'}")
    return 0
