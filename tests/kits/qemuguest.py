"""A real qemu guest as a test holds it: booted from the cached Debian image (hack's
guestimage) and a NoCloud seed, then watched through its serial log, QMP and
qemu-guest-agent, every wait bounded, and always stopped.

Boot times under software emulation are about a minute on an idle machine and several
minutes on a busy one (docs/architecture.md), so the waits here are generous (BOOT_TIMEOUT)
but never unbounded: a wait that runs out raises AssertionError naming what it waited for,
with the end of the serial log. Timings of boots belong to hack/bench/guestboot.py; the
`started` clock here is for the benchmark and for messages.
"""

from __future__ import annotations

import base64
import contextlib
import re
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from guestha.channel.client import AgentClient
from guestha.channel.transport import Member, NetworkTransport
from guestha.cloudinit import bundle
from guestha.controller import userdata
from guestha.controller.credentials import ClusterCredentials
from guestha.model.injection import InjectionSpec
from guestimage import build, qemu, seed
from guestimage.qapi import ExecResult, GuestAgent, Qmp

T = TypeVar("T")
BOOT_TIMEOUT = 300.0  # seconds: from qemu's start to cloud-init finished, on a busy machine
STOP_TIMEOUT = 15.0
# What the serial console shows (cloud-init's final message; the kernel's first line).
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")
KERNEL_BANNER = re.compile(r"Linux version \d")


class QemuGuest:
    """One qemu process; a context manager that always stops it."""

    def __init__(self, folder: Path, seed_data: seed.Seed, forwards: dict[int, int],
                 image: build.Image | None = None, watchdog: bool = True) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        iso = seed.write_iso(seed_data, folder / "cidata.iso")
        self.machine = qemu.Machine(image or build.build(), iso, folder, dict(forwards),
                                    watchdog=watchdog)
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._qmp: Qmp | None = None
        self._agent: GuestAgent | None = None

    # -- life cycle

    def start(self) -> QemuGuest:
        for sock in (self.machine.qmp_socket, self.machine.guest_agent_socket):
            sock.unlink(missing_ok=True)
        with open(self.machine.folder / "qemu.log", "wb") as log:
            self.process = subprocess.Popen(self.machine.argv(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        return self

    def elapsed(self) -> float:
        """Seconds since qemu started."""
        return time.monotonic() - self.started

    def stop(self) -> None:
        """quit through QMP; SIGKILL when qemu is still there after STOP_TIMEOUT."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp(timeout=5.0).execute("quit", timeout=5.0)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        for client in (self._qmp, self._agent):
            if client is not None:
                client.close()
        self._qmp = self._agent = None

    def __enter__(self) -> QemuGuest:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the guest shows

    def serial(self) -> str:
        try:
            return self.machine.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _failure(self, what: str, timeout: float) -> AssertionError:
        tail = "\n".join(self.serial().splitlines()[-40:])
        state = "" if self.process is None or self.process.poll() is None else \
            f" (qemu exited with {self.process.returncode}: see {self.machine.folder}/qemu.log)"
        return AssertionError(f"{self.machine.folder.name}: timed out after {timeout:g} s "
                              f"waiting for {what}{state}; the serial log ends with:\n{tail}")

    def _wait(self, what: str, timeout: float, probe: Callable[[], T | None],
              interval: float = 0.5) -> T:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise self._failure(what, timeout)
            value = probe()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise self._failure(what, timeout)
            time.sleep(interval)

    def wait_serial(self, pattern: re.Pattern[str], count: int = 1,
                    timeout: float = BOOT_TIMEOUT) -> float:
        """Waits until the serial log shows `pattern` `count` times; seconds since start."""
        def seen() -> float | None:
            return self.elapsed() if len(pattern.findall(self.serial())) >= count else None
        return self._wait(f"{pattern.pattern!r} x{count} on the serial console", timeout, seen)

    def boots(self) -> int:
        """How many times the kernel started in this qemu (resets included)."""
        return len(KERNEL_BANNER.findall(self.serial()))

    # -- QMP and the guest agent

    def qmp(self, timeout: float = 30.0) -> Qmp:
        if self._qmp is None:
            def connect() -> Qmp | None:
                try:
                    return Qmp(self.machine.qmp_socket, timeout=5.0)
                except (OSError, TimeoutError):
                    return None
            self._qmp = self._wait("QMP", timeout, connect, interval=0.2)
        return self._qmp

    def watchdog_events(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """The QMP WATCHDOG events so far (reading for up to `timeout` seconds first)."""
        qmp = self.qmp()
        events = qmp.poll_events(timeout) if timeout > 0 else qmp.poll_events(0.01)
        return [e for e in events if e.get("event") == "WATCHDOG"]

    def guest_agent(self, timeout: float = BOOT_TIMEOUT) -> GuestAgent:
        """A synchronised qemu-guest-agent session: waits until the agent in the guest
        answers guest-sync (it starts when udev sees its virtio port)."""
        if self._agent is not None:
            try:
                self._agent.sync(5.0)
                return self._agent
            except (OSError, TimeoutError):
                self._agent.close()
                self._agent = None

        def connect() -> GuestAgent | None:
            try:
                return GuestAgent(self.machine.guest_agent_socket, timeout=3.0)
            except (OSError, TimeoutError):
                return None
        self._agent = self._wait("qemu-guest-agent to answer guest-sync", timeout, connect,
                                 interval=1.0)
        return self._agent

    def run(self, *argv: str, timeout: float = 60.0) -> ExecResult:
        """Runs a command in the guest through qemu-guest-agent's guest-exec."""
        return self.guest_agent().exec(list(argv), timeout=timeout)

    def shell(self, script: str, timeout: float = 60.0) -> ExecResult:
        return self.run("/bin/sh", "-c", script, timeout=timeout)


@contextlib.contextmanager
def booted(folder: Path, seed_data: seed.Seed, forwards: dict[int, int],
           watchdog: bool = True) -> Iterator[QemuGuest]:
    """A started guest, stopped however the block ends."""
    guest = QemuGuest(folder, seed_data, forwards, watchdog=watchdog)
    try:
        yield guest.start()
    finally:
        guest.stop()



@dataclass(frozen=True)
class MemberSeed:
    """What the operator's injection makes for one member, and its seed disk's content."""

    secret: dict[str, Any]  # the per-member user-data Secret's manifest
    seed: seed.Seed  # its user-data on the cidata disk, with KubeVirt's meta-data
    credentials: ClusterCredentials  # the cluster's CA, operator certificate, heartbeat key
    agent_version: str

    def channel_client(self, port: int, context: ssl.SSLContext | None = None,
                       timeout: float = 30.0) -> AgentClient:
        """The operator's channel client (guestha.channel) to the guest's agent through
        the port forwarded from 127.0.0.1, with the operator's TLS context of this cluster
        (or `context`)."""
        member = Member(self.credentials.namespace, self.seed.local_hostname, port,
                        "127.0.0.1")
        return AgentClient(member, NetworkTransport(context or self.credentials.ssl_context()),
                           timeout=timeout)


def member_seed(namespace: str, cluster: str, member: str, owner_user_data: bytes | None,
                spec: Mapping[str, Any] | None = None) -> MemberSeed:
    """The seed of a member VM of the InGuestCluster `cluster` (its `spec`; default: the
    CRD's defaults, fencing.watchdog true), made as the operator's injection makes it:
    fresh cluster credentials, the member's serving certificate, the member's user-data
    (the owner's `owner_user_data`, then guestha's part: guestha.controller.userdata) in
    the per-member Secret, whose `userdata` is what virt-launcher puts on the cidata disk
    (instance-id NAME.NAMESPACE, hostname the VM's name)."""
    cluster_spec = dict(spec or {})
    body = {"apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
            "metadata": {"name": cluster, "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": cluster_spec}
    injection = InjectionSpec.from_spec(cluster_spec)
    credentials = ClusterCredentials.new(namespace, cluster)
    built = bundle.build()
    data = userdata.member_user_data(injection, cluster, member, credentials,
                                     credentials.issue_member(member), owner_user_data,
                                     built.data)
    secret = userdata.build_secret(namespace, member, body, data)
    rendered = base64.b64decode(secret["data"][userdata.USERDATA_KEY])
    return MemberSeed(secret, seed.Seed(rendered, seed.kubevirt_instance_id(member, namespace),
                                        member), credentials, built.version)
