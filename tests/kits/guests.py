"""Guest hosts that run the real agent, installed the way the operator installs it.

Each guest is a KubeVirt-simulator guest host (kubevirtsim.guesthost) booted from the
cloud-config of guestha.cloudinit.recipe, the builders the operator's injection uses:
write_files put the agent bundle (guestha.cloudinit.bundle's zipapp), agent.json, the TLS
files, the heartbeat key and the systemd unit; runcmd enables it. The test or benchmark is
the operator: kits.client.Client with the operator's certificate, kits.events.EventReader
for the event long-poll, kits.cluster to configure them.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestha.cloudinit import bundle, recipe
from guestha.protocol.constants import AGENT_PORT
from kits.client import Client
from kits.interpreters import agent_python
from kits.pki import Pki
from kits.userdata import guest_user_data
from kubevirtsim.guesthost import (
    NETNS_PREFIX,
    VETH_PREFIX,
    GuestHost,
    GuestHostError,
    GuestSpec,
    cleanup_stale,
)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise GuestHostError(f"ip {' '.join(args)}: {done.stderr.strip()}")


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
            if recipe.GUEST_PATHS.bundle.encode() in _cmdline(pid).split(b"\0"):
                return pid
        return None

    def journal(self) -> str:
        """The end of the agent unit's journal."""
        done = self.guest.exec(
            ["journalctl", "-u", recipe.GUEST_PATHS.unit_name(), "--no-pager"], timeout=10
        )
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


@contextlib.contextmanager
def guest_agents(
    state_dir: Path,
    pki: Pki,
    members: Sequence[str],
    cluster: str = "web",
    extra_files: Callable[[str], Sequence[Mapping[str, Any]]] | None = None,
    boot_timeout: float = 30.0,
    watchdog_device: str | None = None,
) -> Iterator[list[GuestAgent]]:
    """Boots one guest host per member with the agent installed by cloud-init, waits until
    every agent answers, and powers them all off (and cleans up after any crash) on exit.
    `watchdog_device`: the agent's watchdogDevice (a stand-in file the guest's own
    `extra_files` write)."""
    cleanup_stale(state_dir)
    agent_bundle = bundle.build().data
    key = os.urandom(32)
    python = agent_python()
    guests: list[GuestHost] = []
    try:
        agents = []
        for i, member in enumerate(members):
            user_data = guest_user_data(
                member,
                cluster,
                pki,
                agent_bundle,
                key,
                python,
                extra_files(member) if extra_files else (),
                watchdog_device=watchdog_device,
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
