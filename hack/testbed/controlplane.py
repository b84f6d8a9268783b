"""Run a real etcd and kube-apiserver on 127.0.0.1, as envtest does, and stop them cleanly.

The processes run detached in their own sessions, so a control plane outlives the
command that started it (`hack/devcluster up`) and another command (`down`) stops it
from the pids recorded in its folder. Everything of one control plane lives in one
folder: certificates, etcd's data, logs, the admin kubeconfig and `state.json`.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed import build, pki, processes

SERVICE_CIDR = "10.96.0.0/16"
FRONT_PROXY_CLIENT = "front-proxy-client"


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
    pids: dict[str, int] = field(default_factory=dict)


class ControlPlane:
    """One etcd + kube-apiserver pair whose files live under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.pki = self.folder / "pki"
        self.logs = self.folder / "logs"
        self.kubeconfig = self.folder / "kubeconfig"
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
        if (self.pki / "admin.crt").exists():
            return
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
        ca = pki.KeyPair((self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes())
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

    def up(self, timeout: float = 120.0) -> None:
        """Build what is missing, start etcd then the apiserver, wait until ready."""
        if self.running():
            self.wait_ready(timeout)
            return
        build.build_all()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._make_pki()
        state = State(apiserver_port=free_port(), etcd_port=free_port(),
                      etcd_peer_port=free_port())
        etcd_url = f"http://127.0.0.1:{state.etcd_port}"
        peer_url = f"http://127.0.0.1:{state.etcd_peer_port}"
        state.pids["etcd"] = processes.spawn(
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
        state.pids["kube-apiserver"] = processes.spawn(
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
             "--enable-priority-and-fairness=false",
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

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET a path of the apiserver as the admin."""
        with urllib.request.urlopen(self.server + path, context=self._ssl(),
                                    timeout=timeout) as r:
            return bytes(r.read())

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            state = self.state()
            for name, pid in state.pids.items():
                if not processes.alive(pid):
                    log = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited during start-up; its log ends:\n{log}")
            try:
                if self.get("/readyz", timeout=2) == b"ok":
                    return
            except Exception as e:  # not listening yet, or not ready
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready within {timeout:.0f}s: {last}")

    def down(self, timeout: float = 20.0) -> None:
        """Stop the apiserver first, etcd after it (the reverse hangs the apiserver)."""
        state = self.state()
        for name in ("kube-apiserver", "etcd"):
            pid = state.pids.pop(name, None)
            if pid is not None:
                processes.stop(pid, timeout)
        self._save(state)
        for pid in processes.referencing(str(self.folder) + "/"):
            processes.stop(pid, timeout)

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the testbed's kubectl against this control plane; failures carry stderr."""
        result = subprocess.run(
            [str(build.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr.strip()}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a local etcd + kube-apiserver")
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
