"""Real agent processes on this host (`python3 -m guestha.agent`, or the zipapp), each with
its own folder: identity file, certificates, heartbeat key, state, log.

The identity file comes from guestha.cloudinit.recipe, the builder the operator's
injection uses, with this agent's folder for its paths. For the agent tier's tests of the
channel, quorum, stop and saved state, where a whole guest host is not needed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from guestha.cloudinit import recipe
from guestha.protocol.constants import AGENT_PORT, HEARTBEAT_PORT
from kits.client import Client
from kits.interpreters import agent_python
from kits.pki import Pki
from kits.waiting import wait_for

OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"


class AgentError(AssertionError):
    """The agent exited, or did not listen in time (its log's end in the message)."""


@dataclass
class AgentProc:
    """One agent process, started on demand; its identity file written at construction."""

    member: str
    address: str
    folder: Path
    pki: Pki
    cluster: str = "web"
    listen: str | None = None  # the identity's listenAddress (default: `address`)
    port: int = AGENT_PORT
    heartbeat_port: int = HEARTBEAT_PORT
    key: bytes = b"heartbeat key for tests"
    netns: str | None = None
    zipapp: Path | None = None
    watchdog: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # The agent runs on Python 3.9 in guests: hack/test points this at a 3.9 interpreter.
    python: str = field(default_factory=agent_python)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cert, key = self.pki.agent_cert(self.member, self.address)
        key_file = self.folder / "heartbeat.key"
        key_file.write_bytes(self.key)
        paths = dataclasses.replace(
            recipe.GUEST_PATHS, tls_cert=str(cert), tls_key=str(key),
            tls_ca=str(self.pki.ca_file), heartbeat_key=str(key_file),
            state_dir=str(self.folder / "state"))
        identity = recipe.identity(
            self.cluster, self.member, listen_address=self.listen or self.address,
            port=self.port, heartbeat_port=self.heartbeat_port,
            watchdog_device=None if self.watchdog is None else str(self.watchdog),
            paths=paths)
        self.config = self.folder / "agent.json"
        self.config.write_text(recipe.identity_text(identity))
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
