"""Test tooling for real agent processes: certificates, agent processes, an operator client,
and network namespaces joined by a bridge (one per guest, so links can be cut).

Used by tests/agent/test_agent_channel.py and test_agent_quorum.py; not a test itself.
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
import time
import uuid
from collections.abc import Iterator
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
            "cluster": self.cluster, "member": self.member, "listenAddress": self.address,
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

    def client(self, cert: tuple[Path, Path] | None = None) -> Client:
        return Client(self.address, self.port, self.pki, self.pki.operator if cert is None
                      else cert, self.member)


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
    """`count` guest namespaces on 10.<net>.0.0/24, plus a host-side link for the client."""

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

    def down(self) -> None:
        _ip("link", "del", self.host_link(), check=False)
        for i in range(self.count):
            _ip("netns", "del", self.node_ns(i), check=False)
        _ip("netns", "del", self.bridge_ns, check=False)


@contextmanager
def lan(prefix: str, count: int, net: int = 231) -> Iterator[Lan]:
    network = Lan(prefix, count, net)
    network.up()
    try:
        yield network
    finally:
        network.down()


def can_use_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None
