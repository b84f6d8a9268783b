"""Guest hosts that run the real guestha agent, installed the way the operator installs it.

Each guest is a KubeVirt-simulator guest host (kubevirtsim.guesthost) booted from a
``#cloud-config`` shaped like the operator's injection: write_files put the agent bundle
(guestha.cloudinit.bundle's zipapp), /etc/guestha/agent.json, the TLS files and the
heartbeat key, and a systemd unit; runcmd enables it. The test or benchmark is the operator:
a Client holding the operator's certificate, and an EventReader per agent doing the event
long-poll (which also keeps the operator's quorum vote at that agent).

Shared by tests/agent (test_agent_e2e.py; agentkit re-exports Pki, Client and wait_for)
and hack/bench/agent.py, so the tests and the benchmark measure the same set-up. Lives in
hack/ because hack/ is importable (and type-checked) from both.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from guestha.cloudinit import bundle
from kubevirtsim.guesthost import (
    NETNS_PREFIX,
    VETH_PREFIX,
    GuestHost,
    GuestHostError,
    GuestSpec,
    cleanup_stale,
)
from testbed.pki import KeyPair, issue, make_ca

OPERATOR_CN = "guestha-operator"
EPOCH_HEADER = "Guestha-Epoch"
AGENT_PORT = 7480
HEARTBEAT_PORT = 7481
AGENT_BUNDLE = "/usr/local/lib/guestha/guestha-agent.pyz"
IDENTITY_FILE = "/etc/guestha/agent.json"
UNIT_NAME = "guestha-agent"
UNIT_FILE = f"/etc/systemd/system/{UNIT_NAME}.service"
TLS_DIR = "/etc/guestha/tls"
HEARTBEAT_KEY_FILE = "/etc/guestha/heartbeat.key"
STATE_DIR = "/var/lib/guestha"
# The guest's own bootcmd, before guestha's part (none by default).
GUEST_BOOTCMD: tuple[str, ...] = ()


def wait_for(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Polls `predicate` until it returns something true (returned), or fails after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# --------------------------------------------------------------------------- certificates


@dataclass
class Pki:
    """A cluster CA, an operator client certificate, and certificates that must be refused."""

    folder: Path
    ca: KeyPair = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca("guestha-cluster-ca")
        self.ca_file = self.folder / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert)
        self.operator = issue(self.ca, OPERATOR_CN, client=True).write(self.folder, "operator")
        other_ca = make_ca("some-other-ca")
        self.foreign = issue(other_ca, OPERATOR_CN, client=True).write(self.folder, "foreign")
        self.wrong_cn = issue(self.ca, "not-the-operator", client=True).write(
            self.folder, "wrong-cn"
        )

    def agent_keypair(self, member: str, address: str | None = None) -> KeyPair:
        """The serving certificate of one agent: named after its member (and address)."""
        ips = (address,) if address else ()
        return issue(self.ca, member, dns=(member,), ips=ips, server=True)

    def agent_cert(self, member: str, address: str) -> tuple[Path, Path]:
        return self.agent_keypair(member, address).write(self.folder, f"agent-{member}")


# --------------------------------------------------------------------------- the client


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address whose certificate is checked against a name (the member): a
    guest's address is only known once it booted, after its certificate was issued."""

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext, timeout: float, tls_name: str
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls_context = context
        self._tls_name = tls_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._tls_name)


class Client:
    """The operator's side, as a test holds it: HTTPS with a client certificate."""

    def __init__(
        self,
        address: str,
        port: int,
        pki: Pki,
        cert: tuple[Path, Path] | None,
        server_name: str,
        timeout: float = 30.0,
        tls_name: str | None = None,
        epoch: int | None = None,
    ) -> None:
        self.address, self.port = address, port
        # The operator's epoch, sent as Guestha-Epoch on every request: what makes a request
        # count as the operator's quorum vote at the agent (docs/agent-api.md). None: no
        # header (the request is answered, but is no contact).
        self.epoch = epoch
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self.context = ctx
        self.server_name = server_name
        # None: the certificate must name the address (agents of agentkit); else this name.
        self.tls_name = tls_name
        self.timeout = timeout
        self.last_headers: dict[str, str] = {}
        self._conn: http.client.HTTPSConnection | None = None

    def connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            if self.tls_name is None:
                self._conn = http.client.HTTPSConnection(
                    self.address, self.port, context=self.context, timeout=self.timeout
                )
            else:
                self._conn = _NamedHTTPSConnection(
                    self.address,
                    self.port,
                    context=self.context,
                    timeout=self.timeout,
                    tls_name=self.tls_name,
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"}
        if self.epoch is not None:
            hdrs[EPOCH_HEADER] = str(self.epoch)
        hdrs.update(headers or {})
        for attempt in range(2):
            conn = self.connection()
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
                self.last_headers = dict(resp.getheaders())
                return resp.status, json.loads(raw) if raw else None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the agent closed: once more
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def status(self) -> dict[str, Any]:
        code, body = self.get("/v1/status")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def command(
        self,
        method: str,
        path: str,
        epoch: int,
        body: dict[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> tuple[int, Any]:
        payload = {"epoch": epoch, "operationId": operation_id or uuid.uuid4().hex, **(body or {})}
        return self.request(method, path, payload, {EPOCH_HEADER: str(epoch)})


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Received:
    """One agent event and the moment (time.monotonic()) the operator's side had it."""

    at: float
    stream: str
    event: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.event["kind"])

    @property
    def seq(self) -> int:
        return int(self.event["seq"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.event.get("data") or {})


class EventReader:
    """The operator's event long-poll on one agent, in a thread of its own.

    Keeps every event with the moment it arrived; after an agent restart (410 with another
    stream) it reads the new run from its first event. Each poll of a client that carries the
    operator's epoch counts as operator contact at the agent (when it arrives), so a running
    reader holds the operator's vote there.
    """

    def __init__(self, client: Client, poll_seconds: float = 2.0) -> None:
        self.client = client
        self.poll_seconds = poll_seconds
        self.received: list[Received] = []
        self.errors = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stream: str | None = None
        self._after = 0
        self._thread = threading.Thread(
            target=self._run, name=f"events-{client.server_name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.client.timeout + 5)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            path = f"/v1/events?after={self._after}&timeout={self.poll_seconds:g}"
            if self._stream:
                path += f"&stream={self._stream}"
            try:
                code, body = self.client.get(path)
            except (OSError, http.client.HTTPException, ValueError):
                self.client.close()
                self.errors += 1
                self._stop.wait(0.05)
                continue
            now = time.monotonic()
            if code == 410:
                if body.get("stream") != self._stream:  # another run of the agent
                    self._stream, self._after = body.get("stream"), 0
                else:  # fell out of the ring: go on from the oldest held
                    self._after = max(int(body.get("firstSeq") or 1) - 1, 0)
                continue
            if code != 200:
                self.errors += 1
                self._stop.wait(0.2)
                continue
            stream = str(body["stream"])
            self._stream = stream
            with self._cond:
                for event in body["events"]:
                    self.received.append(Received(now, stream, event))
                    self._after = int(event["seq"])
                self._cond.notify_all()

    def mark(self) -> int:
        """A position: wait()/since() with it see only what arrives from now on."""
        with self._cond:
            return len(self.received)

    def since(self, mark: int = 0, kind: str | None = None, **data: Any) -> list[Received]:
        with self._cond:
            found = self.received[mark:]
        return [
            r
            for r in found
            if (kind is None or r.kind == kind) and all(r.data.get(k) == v for k, v in data.items())
        ]

    def wait(self, kind: str, timeout: float, mark: int = 0, **data: Any) -> Received:
        """The first event of `kind` (with these data fields) after `mark`; waits for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.received[mark:]:
                    if r.kind == kind and all(r.data.get(k) == v for k, v in data.items()):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.seq, r.kind, r.data) for r in self.received[mark:]][-15:]
                    raise AssertionError(
                        f"{self.client.server_name}: no {kind} {data} event "
                        f"within {timeout}s; the last seen: {seen}"
                    )
                self._cond.wait(left)


# --------------------------------------------------------------------------- guests


def agent_python() -> str:
    """The interpreter the guests run the agent with (hack/test sets a Python 3.9)."""
    return os.environ.get("GUESTHA_AGENT_PYTHON", sys.executable)


def agent_unit(python: str) -> str:
    """The systemd unit of the agent. KillMode=process: restarting the agent leaves the
    resources it started running (it adopts them again)."""
    return (
        "[Unit]\n"
        "Description=guestha agent\n"
        "After=network-online.target\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={python} {AGENT_BUNDLE} --config {IDENTITY_FILE}\n"
        "KillMode=process\n"
        "Restart=always\n"
        "RestartSec=1\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def agent_user_data(
    member: str,
    cluster: str,
    pki: Pki,
    agent_bundle: bytes,
    heartbeat_key: bytes,
    python: str,
    extra_files: Sequence[Mapping[str, Any]] = (),
    bootcmd: Sequence[str] = GUEST_BOOTCMD,
    *,
    port: int = AGENT_PORT,
    transport: str | None = None,
) -> bytes:
    """The #cloud-config that installs and starts the agent (plus `extra_files`, and the
    guest's own `bootcmd`), listening on `port` over `transport` (the agent's default when
    None)."""
    identity: dict[str, Any] = {"cluster": cluster, "member": member, "port": port}
    if transport is not None:
        identity["transport"] = transport
    identity |= {
        "heartbeatPort": HEARTBEAT_PORT,
        "tlsCert": f"{TLS_DIR}/agent.crt",
        "tlsKey": f"{TLS_DIR}/agent.key",
        "tlsCA": f"{TLS_DIR}/ca.crt",
        "operatorName": OPERATOR_CN,
        "heartbeatKeyFile": HEARTBEAT_KEY_FILE,
        "stateDir": STATE_DIR,
    }
    pair = pki.agent_keypair(member)
    config = {
        "write_files": [
            {
                "path": AGENT_BUNDLE,
                "encoding": "gz+b64",
                "permissions": "0755",
                "content": base64.b64encode(gzip.compress(agent_bundle, mtime=0)).decode(),
            },
            {
                "path": IDENTITY_FILE,
                "permissions": "0644",
                "content": json.dumps(identity, indent=2) + "\n",
            },
            {"path": f"{TLS_DIR}/ca.crt", "content": pki.ca.cert.decode()},
            {"path": f"{TLS_DIR}/agent.crt", "content": pair.cert.decode()},
            {"path": f"{TLS_DIR}/agent.key", "permissions": "0600", "content": pair.key.decode()},
            {
                "path": HEARTBEAT_KEY_FILE,
                "permissions": "0600",
                "encoding": "b64",
                "content": base64.b64encode(heartbeat_key).decode(),
            },
            {"path": UNIT_FILE, "content": agent_unit(python)},
            *[dict(f) for f in extra_files],
        ],
        "runcmd": ["systemctl daemon-reload", f"systemctl enable --now {UNIT_NAME}"],
    }
    if bootcmd:
        config = {"bootcmd": list(bootcmd), **config}
    return b"#cloud-config\n" + yaml.safe_dump(config, sort_keys=False).encode()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@dataclass
class GuestAgent:
    """One guest host and the agent its cloud-init installed."""

    member: str
    guest: GuestHost
    pki: Pki

    @property
    def address(self) -> str:
        return self.guest.address

    @property
    def veth(self) -> str:
        """The host end of the guest's link (down: the guest is cut off)."""
        return VETH_PREFIX + self.guest.netns.removeprefix(NETNS_PREFIX)

    def client(
        self,
        cert: tuple[Path, Path] | None = None,
        timeout: float = 10.0,
        anonymous: bool = False,
        epoch: int | None = None,
    ) -> Client:
        """A channel client (the operator's certificate unless `cert`; none if anonymous),
        sending `epoch` as the operator's epoch on every request when given."""
        use = None if anonymous else (cert or self.pki.operator)
        return Client(
            self.address,
            AGENT_PORT,
            self.pki,
            use,
            self.member,
            timeout=timeout,
            tls_name=self.member,
            epoch=epoch,
        )

    def exec(self, *argv: str, timeout: float = 30) -> str:
        """Runs a command in the guest; its stdout (fails on a non-zero exit)."""
        done = self.guest.exec(list(argv), timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"{self.member}: {' '.join(argv)} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    def pids(self, argv: Sequence[str]) -> list[int]:
        """Host pids of this guest's processes running exactly `argv`."""
        wanted = "\0".join(argv).encode() + b"\0"
        return sorted(p for p in self.guest.host_pids() if _cmdline(p) == wanted)

    def agent_pid(self) -> int | None:
        """Host pid of the agent process, if it runs."""
        for pid in self.guest.host_pids():
            if AGENT_BUNDLE.encode() in _cmdline(pid).split(b"\0"):
                return pid
        return None

    def journal(self) -> str:
        done = self.guest.exec(["journalctl", "-u", UNIT_NAME, "--no-pager"], timeout=10)
        return done.stdout.decode(errors="replace")[-3000:]

    def wait_serving(self, timeout: float = 30.0) -> dict[str, Any]:
        """Waits until cloud-init is done and the agent answers /v1/status; its status."""
        c = self.client(timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                ci = self.guest.cloud_init_status()
                if ci == "error":
                    raise AssertionError(
                        f"{self.member}: cloud-init failed: "
                        f"{self.exec('cat', '/var/log/cloud-init-output.log')}"
                    )
                if ci == "done":
                    try:
                        return c.status()
                    except (OSError, http.client.HTTPException):
                        c.close()
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.member}: agent not serving after {timeout}s "
                        f"(cloud-init {ci}); journal:\n{self.journal()}"
                    )
                time.sleep(0.05)
        finally:
            c.close()

    def cut(self) -> None:
        """Takes the guest's link down at the host end (its peers and the operator lose it)."""
        _ip("link", "set", self.veth, "down")

    def mend(self) -> None:
        _ip("link", "set", self.veth, "up")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise GuestHostError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def guest_agents(
    state_dir: Path,
    pki: Pki,
    members: Sequence[str],
    cluster: str = "web",
    extra_files: Callable[[str], Sequence[Mapping[str, Any]]] | None = None,
    boot_timeout: float = 30.0,
) -> Iterator[list[GuestAgent]]:
    """Boots one guest host per member with the agent installed by cloud-init, waits until
    every agent answers, and powers them all off (and cleans up after any crash) on exit."""
    cleanup_stale(state_dir)
    agent_bundle = bundle.build().data
    key = os.urandom(32)
    python = agent_python()
    guests: list[GuestHost] = []
    try:
        agents = []
        for i, member in enumerate(members):
            user_data = agent_user_data(
                member,
                cluster,
                pki,
                agent_bundle,
                key,
                python,
                extra_files(member) if extra_files else (),
            )
            spec = GuestSpec(
                key=f"{cluster}/{member}",
                uid=f"{member}-{uuid.uuid4().hex[:12]}",
                hostname=member,
                datasource="NoCloud",
                user_data=user_data,
                network_data=None,
                node=f"node-{i}",
            )
            guest = GuestHost(spec, state_dir)
            guests.append(guest)
            guest.boot()
            agents.append(GuestAgent(member, guest, pki))
        for agent in agents:
            agent.wait_serving(boot_timeout)
        yield agents
    finally:
        problems = []
        for guest in guests:
            try:
                guest.kill()
            except GuestHostError as e:
                problems.append(str(e))
        cleanup_stale(state_dir)
        if problems:
            raise GuestHostError("; ".join(problems))


def configure(
    agents: Sequence[GuestAgent],
    clients: Mapping[str, Client],
    epoch: int,
    groups: Callable[[GuestAgent], list[dict[str, Any]]],
    heartbeat: Mapping[str, Any] | None = None,
    fencing: Mapping[str, Any] | None = None,
) -> None:
    """PUT /v1/config to every agent: its groups, the others as peers."""
    peers = [{"member": a.member, "address": a.address} for a in agents]
    for a in agents:
        body: dict[str, Any] = {"groups": groups(a), "peers": peers}
        if heartbeat is not None:
            body["heartbeat"] = dict(heartbeat)
        if fencing is not None:
            body["fencing"] = dict(fencing)
        code, answer = clients[a.member].command("PUT", "/v1/config", epoch, body)
        if code != 200:
            raise AssertionError(f"{a.member}: PUT /v1/config answered {code}: {answer}")


def wait_quorum(
    agents: Sequence[GuestAgent], clients: Mapping[str, Client], timeout: float = 15.0
) -> None:
    """Waits until every agent counts all its peers and the operator (the polls of an
    EventReader whose client carries the operator's epoch are the operator's contact)."""
    votes = len(agents) + 1

    def full(a: GuestAgent) -> bool:
        try:
            quorum = clients[a.member].status()["quorum"]
        except (OSError, http.client.HTTPException):
            clients[a.member].close()
            return False
        return bool(quorum["hasQuorum"] and quorum["present"] == votes)

    for a in agents:
        wait_for(
            lambda a=a: full(a),
            timeout,
            what=f"{a.member} hearing its {len(agents) - 1} peers and the operator",
        )
