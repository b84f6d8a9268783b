"""The Helm chart installed into the local control plane, then upgraded in place while a
service group is Online, and the group never leaves its member.

What stands in for what: the control plane has no kubelet (nor the Deployment and
ReplicaSet controllers), so the chart's Deployment never gets pods. Everything else the
chart installs is real and used: the CRDs (installed by `helm install` where missing; at
the upgrade, applied server-side from the new chart's crds/ as an administrator must,
since Helm never upgrades crds/), the ServiceAccount, ClusterRole, Roles and bindings.
The operator's pods are operator processes on this host (tests/kits via DevCluster), two
of them as the Deployment's two replicas, each run with a token of the release's
ServiceAccount (so the chart's RBAC is what they may do), the release's namespace as
their own (POD_NAMESPACE, where their Lease lives), and the options of the rendered
Deployment's command, except the listen addresses and the webhook's Service, which become
127.0.0.1 ports and a URL (the apiserver runs outside any pod network). The upgrade
replaces them as the Deployment's strategy does (maxSurge 0, maxUnavailable 1): the
standby first, then the leader, each new one with the new release's command.

Watched throughout, from before `helm upgrade` until the new leader has taken over and
made its pass: the ServiceGroup's status (Online, on web-a only), and the application
itself in web-a's guest (one copy, always the same process).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubevirtkit import Namespace

from kits import rendering, simguests
from kits.sgstatus import fast_cluster, group, online_on, process_group, vm
from testbed.devcluster import OPERATOR, crd_files

pytestmark = pytest.mark.controlplane

RELEASE = f"guestha-{uuid.uuid4().hex[:5]}"  # not "guestha": the session's operator has those
CLUSTER = "web"
MEMBERS = ("web-a", "web-b", "web-c")
MARKER = f"0.{uuid.uuid4().int % 10**9}"
TIMEOUT = 120.0
NEW_VERSION = "0.1.1-upgrade-test"
# Options the test bed sets itself, for a process outside any pod network.
LOCAL_OPTIONS = ("--liveness=", "--webhook-listen=", "--metrics-listen=", "--webhook-service=")


def helm(kube: Any, *args: str) -> str:
    result = rendering.run("helm", "--kubeconfig", str(kube.kubeconfig), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def deployment_options(kube: Any, namespace: str) -> list[str]:
    """The release's Deployment, as Helm wrote it into the cluster: the options of its
    container's command that a process on this host keeps."""
    found = json.loads(kube.kubectl("-n", namespace, "get", "deployment",
                                    f"{RELEASE}-operator", "-o", "json").stdout)
    [container] = found["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[0] == "guestha-operator"
    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]} \
        == {"GUESTHA_NAMESPACE": "metadata.namespace", "POD_NAMESPACE": "metadata.namespace",
            "POD_NAME": "metadata.name"}
    for option in LOCAL_OPTIONS:
        assert any(a.startswith(option) for a in command[1:]), option
    return [a for a in command[1:] if not a.startswith(LOCAL_OPTIONS)]


@dataclass
class Replicas:
    """The Deployment's pods, as operator processes of the local control plane."""

    kube: Any
    namespace: str
    kubeconfig: Path
    running: list[str] = field(default_factory=list)

    def start(self, name: str, options: list[str]) -> None:
        self.kube.local.start_operator(
            timeout=TIMEOUT, name=name, kubeconfig=self.kubeconfig, namespace=self.namespace,
            args=options, env={"POD_NAME": name})
        self.running.append(name)

    def stop(self, name: str) -> None:
        """A clean stop, as the kubelet's SIGTERM: a leader releases its Lease."""
        self.kube.local.stop_process(name)
        self.running.remove(name)

    def holder(self) -> str:
        lease = self.kube.kubectl("-n", self.namespace, "get", "lease", "guestha-operator",
                                  "-o", "json", check=False)
        if lease.returncode != 0:
            return ""
        return str(json.loads(lease.stdout)["spec"].get("holderIdentity") or "")


@dataclass
class GroupWatch:
    """The ServiceGroup's status every 0.25 s in a thread of its own: every sample that is
    not Online on web-a alone is kept."""

    ns: Namespace
    samples: int = 0
    wrong: list[tuple[float, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> GroupWatch:
        self._thread = threading.Thread(target=self._run, name="group-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            status = group(self.ns)
            self.samples += 1
            if status.get("state") != "Online" or status.get("onlineOn") != ["web-a"]:
                self.wrong.append((time.time(), {k: status.get(k) for k in
                                                 ("state", "onlineOn", "members")}))


@pytest.fixture
def release(kube: Any, simulator: Any, tmp_path: Path) -> Iterator[Replicas]:
    """The chart installed as release RELEASE in a namespace of its own, with the session's
    operator (if a test before started it) stopped meanwhile: two operators with two
    Leases would both act."""
    if kube.local is None:
        pytest.skip("runs operator processes with the release's ServiceAccount token")
    local = kube.local
    session_operator = OPERATOR in local.control_plane.state().pids
    local.stop_process(OPERATOR)
    namespace = f"helm-{uuid.uuid4().hex[:6]}"
    helm(kube, "install", RELEASE, str(rendering.CHART), "--namespace", namespace,
         "--create-namespace")
    token = kube.kubectl("-n", namespace, "create", "token", f"{RELEASE}-operator",
                         "--duration=2h").stdout.strip()
    config = tmp_path / "kubeconfig-release"
    local.control_plane.write_token_kubeconfig(config, token, f"{RELEASE}-operator")
    replicas = Replicas(kube, namespace, config)
    try:
        yield replicas
    finally:
        for name in list(replicas.running):
            replicas.stop(name)
        helm(kube, "uninstall", RELEASE, "--namespace", namespace)
        kube.kubectl("delete", "namespace", namespace, "--wait=false")
        # the CRDs as the session installed them (the upgrade's label taken back)
        kube.kubectl("apply", "--server-side", "--force-conflicts",
                     *[a for f in crd_files()[1:] for a in ("-f", str(f))])
        if session_operator:
            local.start_operator(timeout=TIMEOUT)


@pytest.fixture
def app_ns(kube: Any) -> Iterator[Namespace]:
    name = f"upgrade-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    try:
        yield Namespace(kube, name, timeout=TIMEOUT, interval=0.25)
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def new_chart(folder: Path) -> Path:
    """The chart of the next release: version NEW_VERSION, and a label on each CRD that
    shows the CRDs were updated (links in the chart copied as files, as `helm package`
    does)."""
    chart = folder / "guestha"
    shutil.copytree(rendering.CHART, chart, symlinks=False)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = NEW_VERSION
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    for path in (chart / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        crd["metadata"].setdefault("labels", {})["guestha.io/upgrade-test"] = NEW_VERSION
        path.write_text(yaml.safe_dump(crd))
    return chart


def test_a_helm_upgrade_moves_no_online_group(kube: Any, simulator: Any, release: Replicas,
                                              app_ns: Namespace, tmp_path: Path) -> None:
    ns = app_ns
    options = deployment_options(kube, release.namespace)
    release.start("guestha-operator-helm-a", options)
    release.start("guestha-operator-helm-b", options)
    ns.wait_for("a replica holding the release's Lease", release.holder)

    ns.apply(fast_cluster(CLUSTER, MEMBERS))
    for member in MEMBERS:
        ns.apply(vm(member))
    ns.apply(process_group("shop", CLUSTER, MEMBERS, ["/bin/sleep", "86400", MARKER]))
    with simguests.CopyCounter(MARKER.encode()) as copies:
        online_on(ns, ("web-a",))
        [app] = simguests.copies(MARKER.encode())
        epoch = int(ns.get("igc", CLUSTER)["status"]["epoch"])  # type: ignore[index]
        chart = new_chart(tmp_path)
        with GroupWatch(ns) as watch:
            # The administrator's upgrade: the CRDs first (server-side), then the release.
            kube.kubectl("apply", "--server-side", "--force-conflicts",
                         *[a for f in sorted((chart / "crds").glob("*.yaml"))
                           for a in ("-f", str(f))])
            helm(kube, "upgrade", RELEASE, str(chart), "--namespace", release.namespace,
                 "--set", "verbose=true", "--set", "resources.requests.cpu=150m")
            new_options = deployment_options(kube, release.namespace)
            assert new_options == [*options, "--verbose"]
            # The Deployment's rolling update: the standby goes first, the leader last.
            leader = release.holder()
            standby = next(r for r in release.running if r != leader)
            release.stop(standby)
            release.start(standby + "-new", new_options)
            release.stop(leader)
            release.start(leader + "-new", new_options)
            ns.wait_for("a new replica leading", lambda: release.holder().endswith("-new"))
            ns.wait_for("the new leader's pass over the cluster", lambda: int(
                (ns.get("igc", CLUSTER) or {}).get("status", {}).get("epoch") or 0) > epoch)
            time.sleep(5)  # the new leader's agents' reports and status writes settle
        assert watch.samples > 20, watch.samples
        assert not watch.wrong, \
            f"{len(watch.wrong)} of {watch.samples} samples: {watch.wrong[:3]}"
        after = online_on(ns, ("web-a",))
    copies.check()
    assert list(copies.seen) == [app], f"the application restarted: {copies.seen}"
    assert simguests.copies(MARKER.encode()) == [app]
    assert not after.get("failovers"), after
    # What the upgrade changed reached the cluster: the CRDs, the RBAC, the Deployment.
    for crd in ("inguestclusters", "servicegroups", "switchovers"):
        found = json.loads(kube.kubectl("get", "crd", f"{crd}.guestha.io", "-o", "json").stdout)
        assert found["metadata"]["labels"]["guestha.io/upgrade-test"] == NEW_VERSION
    role = json.loads(kube.kubectl("get", "clusterrole", f"{RELEASE}-operator", "-o",
                                   "json").stdout)
    assert role["metadata"]["labels"]["helm.sh/chart"] == f"guestha-{NEW_VERSION}"
    deployment = json.loads(kube.kubectl("-n", release.namespace, "get", "deployment",
                                         f"{RELEASE}-operator", "-o", "json").stdout)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == "150m"
