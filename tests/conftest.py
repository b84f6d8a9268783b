"""Shared fixtures: the cluster the control-plane tier runs against.

By default the session starts its own local control plane (`hack/devcluster`'s
`DevCluster`, in a temporary folder) once. Given `--kubeconfig` or KUBECONFIG, the same
tests run against that cluster instead; `--cluster=kind` makes one with pytest-kind where
a Docker engine exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import build
from testbed.controlplane import KUBECTL_TIMEOUT
from testbed.devcluster import DevCluster, crd_files


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("guestha")
    # --kubeconfig is pytest-kind's option; without --cluster=kind it names the cluster
    # under test.
    group.addoption("--cluster", choices=["local", "kind"], default="local",
                    help="local: build and start a kube-apiserver + etcd here (default); "
                    "kind: a kind cluster through pytest-kind (needs a Docker engine)")


@dataclass
class Kube:
    """The cluster under test, as tests see it."""

    kubeconfig: Path
    local: DevCluster | None  # None when the tests run against a given cluster

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        kubectl = str(build.binary("kubectl"))
        if not Path(kubectl).exists():
            kubectl = shutil.which("kubectl") or kubectl
        try:
            result = subprocess.run([kubectl, "--kubeconfig", str(self.kubeconfig), *args],
                                    input=input, capture_output=True, text=True,
                                    timeout=KUBECTL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kubectl {' '.join(args)}: no answer in "
                                 f"{KUBECTL_TIMEOUT:.0f}s") from None
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


def _install_crds(kube: Kube) -> None:
    """guestha's CRDs; KubeVirt's too where KubeVirt is not installed (kind, a bare cluster)."""
    files = crd_files()
    if kube.kubectl("get", "crd", "virtualmachines.kubevirt.io", check=False).returncode == 0:
        files = files[1:]  # a real KubeVirt owns its CRDs
    paths = [a for f in files for a in ("-f", str(f))]
    kube.kubectl("apply", "--server-side", *paths)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *paths)


def _given_kubeconfig(config: pytest.Config) -> Path | None:
    given = config.getoption("--kubeconfig") or os.environ.get("KUBECONFIG")
    return Path(given) if given else None


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Kube]:
    """A cluster with KubeVirt's CRDs and guestha's CRDs installed."""
    if request.config.getoption("--cluster") == "kind":
        if shutil.which("docker") is None or subprocess.run(
                ["docker", "info"], capture_output=True).returncode != 0:
            pytest.skip("--cluster=kind needs a Docker engine, and none answers here")
        kind = request.getfixturevalue("kind_cluster")  # pytest-kind's own fixture
        given: Path | None = Path(kind.kubeconfig_path)
    else:
        given = _given_kubeconfig(request.config)
    if given is not None:
        kube = Kube(given, None)
        _install_crds(kube)
        yield kube
        return
    cluster = DevCluster(tmp_path_factory.mktemp("devcluster"))
    cluster.up(simulator=False, operator=False)
    try:
        yield Kube(cluster.kubeconfig, cluster)
    finally:
        cluster.down()


@dataclass
class Simulator:
    """The running KubeVirt simulator of the local cluster."""

    state_dir: Path


@pytest.fixture(scope="session")
def simulator(kube: Kube) -> Simulator:
    """The KubeVirt simulator on the local control plane, with a 1 s node heartbeat."""
    if kube.local is None:
        pytest.skip("the simulator runs only on the local control plane")
    kube.local.start_simulator(heartbeat_seconds=1.0)
    kube.local.wait_simulator_ready()
    return Simulator(kube.local.sim_state)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks run only when asked for with `-m bench`."""
    if "bench" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="benchmark: run with -m bench")
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def operator(kube: Kube) -> Iterator[None]:
    """The guestha operator, running with its own ServiceAccount's RBAC on the local cluster
    (with the given kubeconfig elsewhere)."""
    if kube.local is not None:
        kube.local.start_operator()
        yield
        kube.local.stop_process("guestha-operator")
        return
    # this checkout's operator, as on the local cluster (not whatever guestha is installed)
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1] / "operator"),
                                       os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig), PYTHONPATH=path)
    proc = subprocess.Popen([sys.executable, "-m", "guestha.controller.main"], env=env)
    yield
    proc.terminate()
    proc.wait(30)
