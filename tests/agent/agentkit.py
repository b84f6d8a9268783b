"""Test tooling for real agent processes: certificates, agent processes, an operator client,
and network namespaces joined by a bridge (one per guest, so links can be cut).

Used by the agent tier's tests (channel, quorum, heartbeats, stop); not a test itself.
Pki, Client and wait_for live in hack/bench/guestagents.py (shared with the end-to-end
tests on guest hosts and hack/bench/agent.py) and are re-exported here.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.guestagents import Client, Pki, wait_for

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_SRC = ROOT / "operator"


class AgentError(AssertionError):
    pass


def python39() -> str | None:
    """A working Python 3.9, the oldest guests have (pyenv's shims may not run one)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")))
    candidates += [c for c in [shutil.which("python3.9")] if c]
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@dataclass
class AgentProc:
    """One real agent process (`python3 -m guestha.agent`, or the zipapp)."""

    member: str
    address: str
    folder: Path
    pki: Pki
    cluster: str = "web"
    listen: str | None = None  # the identity's listenAddress (default: `address`)
    port: int = 7480
    heartbeat_port: int = 7481
    key: bytes = b"heartbeat key for tests"
    netns: str | None = None
    zipapp: Path | None = None
    watchdog: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # The agent runs on Python 3.9 in guests: hack/test points this at a 3.9 interpreter.
    python: str = os.environ.get("GUESTHA_AGENT_PYTHON", sys.executable)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cert, key = self.pki.agent_cert(self.member, self.address)
        key_file = self.folder / "heartbeat.key"
        key_file.write_bytes(self.key)
        identity: dict[str, Any] = {
            "cluster": self.cluster, "member": self.member,
            "listenAddress": self.listen or self.address,
            "port": self.port, "heartbeatPort": self.heartbeat_port, "tlsCert": str(cert),
            "tlsKey": str(key), "tlsCA": str(self.pki.ca_file),
            "heartbeatKeyFile": str(key_file), "stateDir": str(self.folder / "state"),
        }
        if self.watchdog is not None:
            identity["watchdogDevice"] = str(self.watchdog)
        self.config = self.folder / "agent.json"
        self.config.write_text(json.dumps(identity))
        self.log = self.folder / "agent.log"

    def command(self) -> list[str]:
        if self.zipapp is not None:
            return [self.python, str(self.zipapp), "--config", str(self.config)]
        return [self.python, "-m", "guestha.agent", "--config", str(self.config)]

    def start(self, wait: bool = True) -> AgentProc:
        cmd = self.command()
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = dict(os.environ, PYTHONPATH=str(OPERATOR_SRC), **self.env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.folder)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AgentError(f"agent {self.member} exited {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AgentError(f"agent {self.member} not listening after {timeout}s:\n"
                         f"{self.log.read_text()[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        # `ip netns exec` execs the command, so the pid is the agent's.
        os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def retire(self, timeout: float = 30.0) -> None:
        """Takes every group off this agent (offline, then removed), so no resource
        outlives the test; a no-op when the agent is not running or not reachable."""
        if self.proc is None or self.proc.poll() is not None:
            return
        c = self.client()
        c.timeout = 5.0
        try:
            status = c.status()
            if not status["groups"]:
                return
            c.command("PUT", "/v1/config", status["epoch"], {
                "groups": [], "fencing": {"selfFenceTimeoutSeconds": 0}})
            wait_for(lambda: not c.status()["groups"], timeout, what=f"{self.member} retired")
        except (OSError, AssertionError):
            pass
        finally:
            c.close()

    def client(self, cert: tuple[Path, Path] | None = None, epoch: int | None = None,
               timeout: float = 30.0) -> Client:
        """A channel client; with `epoch`, every request carries it as the operator's."""
        return Client(self.address, self.port, self.pki, self.pki.operator if cert is None
                      else cert, self.member, timeout=timeout, epoch=epoch)

    def netns_run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Runs a command in this agent's network namespace (the host's without one)."""
        cmd = ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def unique_sleep() -> list[str]:
    """A `sleep` command line no other test has, for resources (see kill_command)."""
    return ["sleep", f"{3600 + uuid.uuid4().int % 10**6 / 10**6:.6f}"]


def kill_command(argv: list[str]) -> int:
    """Kills the processes running exactly `argv` (a unique_sleep() left behind)."""
    wanted = "\0".join(argv).encode() + b"\0"
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
        except OSError:
            pass
    return killed


# -- network namespaces: one per guest, veths on a bridge in a namespace of its own


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Lan:
    """`count` guest namespaces on 10.<net>.0.0/24, plus a host-side link for the client.

    Names and the subnet carry this process's id (see `lan`): other checkouts on the same
    machine run these tests at the same time, and must not take each other's links down.
    """

    prefix: str
    count: int
    net: int = 231

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def node_ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def address(self, i: int) -> str:
        return f"10.{self.net}.0.{i + 1}"

    @property
    def host_address(self) -> str:
        return f"10.{self.net}.0.254"

    def host_link(self) -> str:
        return f"{self.prefix}-h"

    def up(self) -> None:
        self.down()
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        for i in range(self.count):
            ns = self.node_ns(i)
            _ip("netns", "add", ns)
            _ip("link", "add", f"{self.prefix}-v{i}", "type", "veth", "peer", "name",
                f"{self.prefix}-b{i}")
            _ip("link", "set", f"{self.prefix}-v{i}", "netns", ns, "name", "eth0")
            _ip("link", "set", f"{self.prefix}-b{i}", "netns", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-b{i}", "master", "br0",
                "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        # The test process (the "operator") reaches the guests through one more veth.
        _ip("link", "add", self.host_link(), "type", "veth", "peer", "name",
            f"{self.prefix}-hb")
        _ip("link", "set", f"{self.prefix}-hb", "netns", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-hb", "master", "br0", "up")
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.host_link())
        _ip("link", "set", self.host_link(), "up")

    def cut(self, i: int) -> None:
        """Cuts guest i off: its bridge port goes down (peers and operator lose it)."""
        _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-b{i}", "down")

    def mend(self, i: int) -> None:
        _ip("-n", self.bridge_ns, "link", "set", f"{self.prefix}-b{i}", "up")

    def _outgoing_rule(self, port: int) -> list[str]:
        return ["to", f"10.{self.net}.0.0/24", "ipproto", "udp", "dport", str(port),
                "blackhole"]

    def drop_outgoing_udp(self, i: int, port: int) -> None:
        """Guest i can no longer send UDP to `port` on the LAN; everything else still
        flows, inbound datagrams included (a one-way break of its heartbeats).

        A policy-routing rule in the guest's namespace (`ip rule ... blackhole`): this
        kernel has neither netfilter tools nor tc actions, and the rule is just as real a
        break of the sending path (the sender's sendto fails, nothing leaves the guest).
        """
        _ip("-n", self.node_ns(i), "rule", "add", *self._outgoing_rule(port))

    def allow_outgoing_udp(self, i: int, port: int) -> None:
        _ip("-n", self.node_ns(i), "rule", "del", *self._outgoing_rule(port), check=False)

    def down(self) -> None:
        _ip("link", "del", self.host_link(), check=False)
        for i in range(self.count):
            _ip("netns", "del", self.node_ns(i), check=False)
        _ip("netns", "del", self.bridge_ns, check=False)


@contextmanager
def lan(tag: str, count: int) -> Iterator[Lan]:
    """A Lan named after `tag` (two letters) and this process, on a subnet of its own."""
    pid = os.getpid()
    network = Lan(f"{tag}{pid % 10000}", count, 100 + pid % 100)
    network.up()
    try:
        yield network
    finally:
        network.down()


def can_use_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


# -- several agents on a Lan, and an operator that holds its vote at each

class Operator:
    """Holds the operator's vote: polls every reachable agent twice a second, with the
    operator's epoch on each request (docs/agent-api.md: what counts as contact)."""

    def __init__(self, agents: list[AgentProc], epoch: int = 1) -> None:
        def clients() -> dict[str, Client]:
            return {a.member: a.client(epoch=epoch, timeout=1.5) for a in agents}

        self.epoch = epoch
        # The test's own requests and the vote-keeping thread each have their connections:
        # an http.client connection is not for two threads at once.
        self.clients = clients()
        self._pollers = clients()
        self.paused: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for member, client in self._pollers.items():
                if member in self.paused:
                    continue
                try:
                    client.get("/v1/healthz")
                except Exception:
                    client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in [*self.clients.values(), *self._pollers.values()]:
            c.close()


@contextmanager
def lan_agents(folder: Path, tag: str, members: Sequence[str],
               options: Mapping[str, Mapping[str, Any]] | None = None,
               ) -> Iterator[tuple[Lan, list[AgentProc]]]:
    """One agent per member, each in a network namespace of its own on one Lan; the second
    runs under Python 3.9 (the oldest guests have) where one is installed. `options` holds
    AgentProc fields per member. On exit every agent is resumed, reconnected, retired (its
    groups taken off) and stopped."""
    pki = Pki(folder / "pki")
    with lan(tag, len(members)) as network:
        agents = [AgentProc(m, network.address(i), folder / m, pki, netns=network.node_ns(i),
                            python=(python39() or sys.executable) if i == 1
                            else sys.executable, **(options or {}).get(m, {}))
                  for i, m in enumerate(members)]
        try:
            for a in agents:
                a.start(wait=False)
            for a in agents:
                a.wait_listening()
            yield network, agents
        finally:
            for a in agents:
                if a.proc is not None and a.proc.poll() is None:
                    os.kill(a.proc.pid, signal.SIGCONT)
            for i, a in enumerate(agents):
                network.mend(i)
                a.retire()
                a.stop()
