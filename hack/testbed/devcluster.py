"""The whole local development cluster: control plane, CRDs, KubeVirt simulator, operator.

`hack/devcluster up` and the test suite's session fixture both go through `DevCluster`,
so what developers run by hand is what the tests run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testbed import processes
from testbed.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
SIMULATOR = "kubevirtsim"
OPERATOR = "guestha-operator"


def shared_dir() -> Path:
    """../shared beside the checkout (GUESTHA_SHARED overrides)."""
    return Path(os.environ.get("GUESTHA_SHARED", REPO.parent / "shared")).resolve()


def crd_files() -> list[Path]:
    """KubeVirt's real CRDs first, then guestha's own."""
    return [shared_dir() / "kubevirt" / "crds.yaml", *sorted((REPO / "crds").glob("*.yaml"))]


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
        self.sim_state.mkdir(parents=True, exist_ok=True)
        self._start(SIMULATOR, [sys.executable, "-m", "kubevirtsim",
                                "--kubeconfig", str(self.kubeconfig),
                                "--state-dir", str(self.sim_state),
                                "--heartbeat-seconds", str(heartbeat_seconds)])

    def wait_simulator_ready(self, timeout: float = 60.0) -> None:
        """Until the simulated nodes carry virt-handler's heartbeat: VMIs can be scheduled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.kubectl("get", "nodes", "-o",
                               "jsonpath={.items[*].metadata.annotations.kubevirt\\.io/heartbeat}",
                               check=False).stdout.split()
            if out:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the KubeVirt simulator did not register nodes within {timeout}s; "
                           f"see {self.control_plane.logs / (SIMULATOR + '.log')}")

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig with the operator ServiceAccount's token: it runs with its own RBAC."""
        manifests = REPO / "manifests" / "operator"
        self.kubectl("apply", "-f", str(manifests / "namespace.yaml"),
                     "-f", str(manifests / "rbac.yaml"))
        token = self.kubectl("create", "token", "guestha-operator", "-n", "guestha-system",
                             "--duration=8760h").stdout.strip()
        path = self.folder / "kubeconfig-operator"
        self.control_plane.write_token_kubeconfig(path, token, "guestha-operator")
        return path

    def start_operator(self) -> None:
        env = {"KUBECONFIG": str(self.operator_kubeconfig())}
        self._start(OPERATOR, [sys.executable, "-m", "guestha.controller.main"], env)

    def up(self, simulator: bool = True, operator: bool = True) -> None:
        self.control_plane.up()
        try:
            self.install_crds()
            if simulator:
                self.start_simulator()
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

    def down(self, keep_data: bool = False) -> None:
        """Stop in reverse: operator, simulator (it powers off its guests), apiserver, etcd;
        then forget the cluster's objects (etcd's data), unless `keep_data`: guests cannot
        outlive the simulator, so the next `up` starts from nothing, as a new cluster does."""
        self.stop_process(OPERATOR)
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
        description="a local KubeVirt-like cluster: kube-apiserver + etcd, KubeVirt's CRDs, "
        "the KubeVirt simulator and the guestha operator",
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
