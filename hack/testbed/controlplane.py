"""Run a real etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, and stop them
cleanly.

The processes run detached in their own sessions, so a control plane outlives the
command that started it (`hack/devcluster up`) and another command (`down`) stops it
from the pids recorded in its folder. Everything of one control plane lives in one
folder: certificates, etcd's data, logs, the kubeconfigs and `state.json`.

kube-controller-manager runs as on a kubeadm cluster, with the controllers guestha relies
on (CONTROLLERS): it authenticates with a client certificate for the user
`system:kube-controller-manager`, whom the RBAC roles that kube-apiserver bootstraps
authorise, and each controller acts with a service account of its own
(`--use-service-account-credentials`). The node lifecycle controller's grace period is
lowered (NODE_MONITOR_GRACE_SECONDS) so that a node that stops answering is seen in
seconds, not in kubelet's 40.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed import build, pki, processes

SERVICE_CIDR = "10.96.0.0/16"
FRONT_PROXY_CLIENT = "front-proxy-client"
ETCD, APISERVER, CONTROLLER_MANAGER = "etcd", "kube-apiserver", "kube-controller-manager"
# the user kube-apiserver's bootstrap RBAC (ClusterRole and binding of the same name) is for
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
# kube-controller-manager's controllers that this cluster needs: collection of dependents
# (VMIs of a deleted VM, objects owned by an InGuestCluster), namespace deletion, node
# health from kubelet-style Leases and status, service-account tokens, EndpointSlices
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "node-lifecycle-controller",
    "serviceaccount-token-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
)
# A node whose kubelet (here: the simulator's node) neither renews its Lease nor posts
# status for this long gets Ready=Unknown and the unreachable taints (kubelet and
# kube-controller-manager default to 40 s); the controller looks every NODE_MONITOR_PERIOD.
NODE_MONITOR_GRACE_SECONDS = 8
NODE_MONITOR_PERIOD_SECONDS = 1
# The longest one testbed kubectl command may take (kubectl wait --timeout=... stays below).
KUBECTL_TIMEOUT = 300.0


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class State:
    """What `up` started, so that `down` can stop it from another process."""

    apiserver_port: int = 0
    etcd_port: int = 0
    etcd_peer_port: int = 0
    controller_manager_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)


class ControlPlane:
    """One etcd, kube-apiserver and kube-controller-manager whose files live under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.pki = self.folder / "pki"
        self.logs = self.folder / "logs"
        self.kubeconfig = self.folder / "kubeconfig"
        self.controller_manager_kubeconfig = self.folder / "kubeconfig-controller-manager"
        self.state_file = self.folder / "state.json"

    # --- state -----------------------------------------------------------------------------
    def state(self) -> State:
        if not self.state_file.exists():
            return State()
        return State(**json.loads(self.state_file.read_text()))

    def _save(self, state: State) -> None:
        if not self.folder.is_dir():  # removed under us (a cleaned temp folder): nothing to keep
            return
        self.state_file.write_text(json.dumps(asdict(state), indent=2))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state().apiserver_port}"

    # --- certificates ----------------------------------------------------------------------
    def _make_pki(self) -> None:
        if not (self.pki / "admin.crt").exists():
            self._make_apiserver_pki()
        if not (self.pki / "controller-manager.crt").exists():
            ca = self._ca()
            pki.issue(ca, CONTROLLER_MANAGER_USER, client=True).write(
                self.pki, "controller-manager")
            # its own serving certificate, so that its /healthz is checked against our CA
            pki.issue(ca, CONTROLLER_MANAGER, dns=("localhost",), ips=("127.0.0.1",),
                      server=True).write(self.pki, "controller-manager-serving")

    def _ca(self) -> pki.KeyPair:
        return pki.KeyPair((self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes())

    def _make_apiserver_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = pki.make_ca("guestha-testbed-ca")
        ca.write(self.pki, "ca")
        pki.issue(
            ca, "kube-apiserver", dns=("localhost", "kubernetes", "kubernetes.default",
                                       "kubernetes.default.svc"),
            ips=("127.0.0.1", "10.96.0.1"), server=True,
        ).write(self.pki, "apiserver")
        pki.issue(ca, "guestha-admin", organization="system:masters", client=True).write(
            self.pki, "admin"
        )
        front = pki.make_ca("guestha-testbed-front-proxy-ca")
        front.write(self.pki, "front-proxy-ca")
        pki.issue(front, FRONT_PROXY_CLIENT, client=True).write(self.pki, "front-proxy-client")
        (self.pki / "sa.key").write_bytes(pki.service_account_key())
        (self.pki / "sa.key").chmod(0o600)

    def write_kubeconfig(self, path: Path, cert: Path, key: Path, user: str) -> None:
        """A kubeconfig for `user` authenticated by the given client certificate."""
        self._write_config(path, user, {"client-certificate-data": _b64(cert),
                                        "client-key-data": _b64(key)})

    def write_token_kubeconfig(self, path: Path, token: str, user: str) -> None:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's)."""
        self._write_config(path, user, {"token": token})

    def _write_config(self, path: Path, user: str, credentials: dict[str, str]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "guestha-dev", "cluster": {
                "server": self.server,
                "certificate-authority-data": _b64(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": f"{user}@guestha-dev",
                          "context": {"cluster": "guestha-dev", "user": user}}],
            "current-context": f"{user}@guestha-dev",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for an ordinary user (RBAC applies), for tests of permissions."""
        ca = self._ca()
        stem = "user-" + user.replace(":", "_")
        crt, key = pki.issue(ca, user, organization=",".join(groups) or None, client=True).write(
            self.pki, stem
        )
        path = self.folder / f"kubeconfig-{stem}"
        self.write_kubeconfig(path, crt, key, user)
        return path

    # --- lifecycle -------------------------------------------------------------------------
    def running(self) -> bool:
        return any(processes.alive(pid) for pid in self.state().pids.values())

    def _alive(self, name: str) -> bool:
        pid = self.state().pids.get(name)
        return pid is not None and processes.alive(pid)

    def up(self, timeout: float = 120.0) -> None:
        """Build what is missing, start etcd, kube-apiserver, then kube-controller-manager;
        return once each is ready."""
        self.start_apiserver(timeout)
        self.start_controller_manager(timeout)

    def start_apiserver(self, timeout: float = 120.0,
                        priority_and_fairness: bool = False) -> None:
        """etcd, then kube-apiserver; returns once /readyz says ok (at once if running).
        `priority_and_fairness`: with API Priority and Fairness on, as on a production
        cluster (its queues and 429s, its apiserver_flowcontrol_* metrics per FlowSchema);
        the test bed runs without it otherwise."""
        if self._alive(APISERVER):
            self.wait_ready(timeout)
            return
        if self.running():  # half of an earlier control plane: start it whole again
            self.down()
        build.build_all()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._make_pki()
        state = State(apiserver_port=free_port(), etcd_port=free_port(),
                      etcd_peer_port=free_port())
        etcd_url = f"http://127.0.0.1:{state.etcd_port}"
        peer_url = f"http://127.0.0.1:{state.etcd_peer_port}"
        state.pids[ETCD] = processes.spawn(
            [str(build.binary("etcd")), "--name", "guestha", "--data-dir",
             str(self.folder / "etcd"), "--listen-client-urls", etcd_url,
             "--advertise-client-urls", etcd_url, "--listen-peer-urls", peer_url,
             "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"guestha={peer_url}", "--unsafe-no-fsync",
             "--log-level", "warn"],
            self.logs / "etcd.log",
        )
        self._save(state)
        p = self.pki
        state.pids[APISERVER] = processes.spawn(
            [str(build.binary("kube-apiserver")),
             f"--etcd-servers={etcd_url}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--secure-port={state.apiserver_port}",
             f"--cert-dir={p}",
             f"--tls-cert-file={p / 'apiserver.crt'}",
             f"--tls-private-key-file={p / 'apiserver.key'}",
             f"--client-ca-file={p / 'ca.crt'}",
             "--authorization-mode=RBAC",
             f"--service-account-key-file={p / 'sa.key'}",
             f"--service-account-signing-key-file={p / 'sa.key'}",
             f"--service-account-issuer=https://127.0.0.1:{state.apiserver_port}",
             f"--service-cluster-ip-range={SERVICE_CIDR}",
             "--allow-privileged=true",
             # The aggregation layer, as on a real cluster (KubeVirt's virt-api uses it).
             f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
             f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
             "--requestheader-username-headers=X-Remote-User",
             "--requestheader-group-headers=X-Remote-Group",
             "--requestheader-extra-headers-prefix=X-Remote-Extra-",
             f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
             f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
             f"--enable-priority-and-fairness={str(priority_and_fairness).lower()}",
             "--v=1"],
            self.logs / "kube-apiserver.log",
        )
        self._save(state)
        self.write_kubeconfig(self.kubeconfig, p / "admin.crt", p / "admin.key", "guestha-admin")
        try:
            self.wait_ready(timeout)
        except Exception:
            self.down()
            raise

    def start_controller_manager(self, timeout: float = 60.0) -> None:
        """kube-controller-manager with CONTROLLERS; returns once every one of them has
        started (its /healthz lists them all and says ok), at once if it runs already.

        Start it after the CRDs whose objects it should collect are installed: the garbage
        collector finds new kinds only at its next discovery, up to 30 s later.
        """
        if self._alive(CONTROLLER_MANAGER):
            self.wait_controller_manager_ready(timeout)
            return
        self._make_pki()
        p = self.pki
        self.write_kubeconfig(self.controller_manager_kubeconfig, p / "controller-manager.crt",
                              p / "controller-manager.key", CONTROLLER_MANAGER_USER)
        state = self.state()
        state.controller_manager_port = free_port()
        config = str(self.controller_manager_kubeconfig)
        state.pids[CONTROLLER_MANAGER] = processes.spawn(
            [str(build.binary(CONTROLLER_MANAGER)),
             f"--kubeconfig={config}",
             f"--authentication-kubeconfig={config}",
             f"--authorization-kubeconfig={config}",
             "--bind-address=127.0.0.1",
             f"--secure-port={state.controller_manager_port}",
             f"--tls-cert-file={p / 'controller-manager-serving.crt'}",
             f"--tls-private-key-file={p / 'controller-manager-serving.key'}",
             f"--client-ca-file={p / 'ca.crt'}",
             f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
             # one instance per cluster here: no election to wait for at start or restart
             "--leader-elect=false",
             "--use-service-account-credentials=true",
             f"--service-account-private-key-file={p / 'sa.key'}",
             f"--root-ca-file={p / 'ca.crt'}",
             f"--controllers={','.join(CONTROLLERS)}",
             f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
             f"--node-monitor-period={NODE_MONITOR_PERIOD_SECONDS}s",
             "--v=1"],
            self.logs / f"{CONTROLLER_MANAGER}.log",
        )
        self._save(state)
        try:
            self.wait_controller_manager_ready(timeout)
        except Exception:
            self.down()
            raise

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET a path of the apiserver as the admin."""
        with urllib.request.urlopen(self.server + path, context=self._ssl(),
                                    timeout=timeout) as r:
            return bytes(r.read())

    def _check_alive(self) -> None:
        """Fail with the end of its log when a process of this control plane has exited."""
        for name, pid in self.state().pids.items():
            if not processes.alive(pid):
                log = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited during start-up; its log ends:\n{log}")

    def wait_ready(self, timeout: float) -> None:
        """Until kube-apiserver's /readyz says ok."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self.get("/readyz", timeout=2) == b"ok":
                    return
            except Exception as e:  # not listening yet, or not ready
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready within {timeout:.0f}s: {last}")

    def controller_manager_health(self, timeout: float = 2.0) -> tuple[int, str]:
        """kube-controller-manager's verbose /healthz: HTTP status and text."""
        url = f"https://127.0.0.1:{self.state().controller_manager_port}/healthz?verbose"
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
                return int(r.status), r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode(errors="replace")

    def wait_controller_manager_ready(self, timeout: float) -> None:
        """Until kube-controller-manager's /healthz says ok and names every controller of
        CONTROLLERS: each gets its check only once it has been started."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, text = self.controller_manager_health()
                started = set(re.findall(r"^\[\+\]([\w-]+) ok", text, re.M))
                if status == 200 and started >= set(CONTROLLERS):
                    return
                last = f"{status}; not started yet: {sorted(set(CONTROLLERS) - started)}"
            except OSError as e:  # not listening yet
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"kube-controller-manager not ready within {timeout:.0f}s: {last}")

    def down(self, timeout: float = 20.0) -> None:
        """Stop kube-controller-manager, then the apiserver, etcd last (the apiserver
        without etcd retries for minutes)."""
        state = self.state()
        for name in (CONTROLLER_MANAGER, APISERVER, ETCD):
            pid = state.pids.pop(name, None)
            if pid is not None:
                processes.stop(pid, timeout)
        self._save(state)
        for pid in processes.referencing(str(self.folder) + "/"):
            processes.stop(pid, timeout)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run the testbed's kubectl against this control plane; failures carry stderr.
        Bounded: a kubectl that hangs (an apiserver starved under load) fails the caller
        with the command named, instead of holding a test until pytest's own timeout."""
        command = [str(build.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        try:
            result = subprocess.run(command, input=input, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"kubectl {' '.join(args)}: no answer in {timeout:.0f}s") \
                from None
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr.strip()}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="a local etcd + kube-apiserver + kube-controller-manager")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, required=True, help="folder for its files")
    args = parser.parse_args(argv)
    cp = ControlPlane(args.dir)
    if args.command == "up":
        t0 = time.monotonic()
        cp.up()
        print(cp.kubeconfig)
        print(f"ready in {time.monotonic() - t0:.1f}s at {cp.server}", file=sys.stderr)
    elif args.command == "down":
        cp.down()
    else:
        print("running" if cp.running() else "stopped")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
