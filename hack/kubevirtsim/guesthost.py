"""Simulated VMIs as isolated guest hosts: a network namespace, a private file system view
and a PID namespace whose PID 1 is ``kubevirtsim.guestinit``.

The KubeVirt simulator "boots" a VMI by starting one of these. Each guest gets its own
address on a bridge in the root namespace (``guestnet``), its own hostname, overlays over
the host's folders (writes never leak to the host or to other guests), its cloud-init run
and a qemu-guest-agent-like socket. Powering it off is one SIGKILL to its PID 1: the
kernel then kills every process of the guest, which is what a VM that loses power does to
its programs.

A guest's folder (``root``) holds what host and guest exchange (``guestinit.plan`` names
the files): the plan and the guestinit zipapp going in, the console log, the cloud-init
state and the guest agent's socket coming out, and the overlays' upper dirs.

Root only (this machine and CI run as root); without root, boot() says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevirtsim import guestnet
from kubevirtsim.cloudinit import planner
from kubevirtsim.guestinit import bundle, plan
from kubevirtsim.guestinit.env import GUEST_PATH
from kubevirtsim.guestnet import (
    BRIDGE,
    NETNS_PREFIX,
    VETH_PREFIX,
    GuestHostError,
    teardown_network,
)

__all__ = [
    "BRIDGE",
    "NETNS_PREFIX",
    "VETH_PREFIX",
    "GuestHost",
    "GuestHostError",
    "GuestSpec",
    "cleanup_stale",
    "teardown_network",
]

_BOOT_WAIT = 15.0


@dataclass(frozen=True)
class GuestSpec:
    """What the simulator knows of a VMI when it boots its guest host."""

    key: str  # "namespace/name" of the VMI, unique
    uid: str  # VMI uid (becomes the cloud-init instance-id)
    hostname: str  # VMI spec.hostname or its name
    datasource: str  # "NoCloud" | "ConfigDrive"
    user_data: bytes | None  # already resolved (inline, base64-decoded or secretRef content)
    network_data: bytes | None
    node: str  # simulated node name (informational)


# --------------------------------------------------------------------------- processes


def _require_root() -> None:
    if os.geteuid() != 0:
        raise GuestHostError(
            "guest hosts need root (network, mount and PID namespaces); run as root, "
            "or use the agent tier's 127.0.0.x fallback"
        )
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            raise GuestHostError(f"guest hosts need the {tool!r} command (iproute2/util-linux)")


def _start_time(pid: int) -> int | None:
    """The kernel's start time of a process (tells a pid from a reused one), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _same_process(pid: int | None, start: int | None) -> bool:
    return bool(pid) and start is not None and _start_time(pid or 0) == start


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _pids_in_pid_namespace(ns: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_namespace(int(entry)) == ns and _start_time(int(entry)):
            pids.append(int(entry))
    return pids


def _wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _same_process(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --------------------------------------------------------------------------- guest host


def _next_guest_id(state_dir: Path, key: str) -> str:
    guests = state_dir / "guests"
    guests.mkdir(parents=True, exist_ok=True)
    counter_file = guests / ".counter"
    with guestnet.locked(guests / ".counter.lock"):
        try:
            counter = int(counter_file.read_text().strip() or 0)
        except (OSError, ValueError):
            counter = 0
        while True:
            counter += 1
            digest = hashlib.sha1(f"{state_dir}\0{key}\0{counter}".encode()).hexdigest()[:8]
            if not (guests / digest).exists() and not os.path.lexists(
                f"/run/netns/{guestnet.netns_name(digest)}"
            ):
                break
        counter_file.write_text(str(counter))
    return digest


class GuestHost:
    """One simulated VMI's guest: boot it, reach it, power it off."""

    def __init__(self, spec: GuestSpec, state_dir: Path) -> None:
        if spec.datasource not in plan.SEED_DIRS:
            raise GuestHostError(
                f"GuestSpec.datasource: {spec.datasource!r} is not one of "
                f"{', '.join(plan.SEED_DIRS)}"
            )
        self.spec = spec
        self._state_dir = Path(state_dir).resolve()
        self._id = _next_guest_id(self._state_dir, spec.key)
        self._root = self._state_dir / "guests" / self._id
        self._root.mkdir(parents=True)
        self._netns = guestnet.netns_name(self._id)
        self._veth = guestnet.veth_name(self._id)
        self._address = ""
        self._holder: subprocess.Popen[bytes] | None = None
        self._init_pid = 0
        self._init_start: int | None = None
        self._pid_ns: str | None = None
        self._exit_code: int | None = None
        self._exited = threading.Event()
        self._lock = threading.Lock()
        self._last_status = "running"
        self._killed = False
        self._write_record(state="created")

    # ---- facts

    @property
    def root(self) -> Path:
        """The host-side folder of this guest: upper/<dir> holds its writes to /etc, /var..."""
        return self._root

    @property
    def address(self) -> str:
        if not self._address:
            raise GuestHostError(f"guest {self.spec.key} has no address before boot()")
        return self._address

    @property
    def mac(self) -> str:
        return guestnet.mac_for(self.address)

    @property
    def netns(self) -> str:
        return self._netns

    @property
    def init_pid(self) -> int:
        """The host's pid of the guest's PID 1 (0 before boot)."""
        return self._init_pid

    def host_pids(self) -> list[int]:
        """Host pids of every live process of the guest (empty once it is powered off)."""
        if self._pid_ns is None or self._exited.is_set():
            return []
        return _pids_in_pid_namespace(self._pid_ns)

    # ---- life cycle

    def _write_record(self, **fields: Any) -> None:
        path = self._root / "guest.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {
                "key": self.spec.key,
                "uid": self.spec.uid,
                "hostname": self.spec.hostname,
                "node": self.spec.node,
                "netns": self._netns,
                "veth": self._veth,
            }
        record.update(fields)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        tmp.replace(path)

    def boot(self) -> None:
        """Create the guest's namespaces and start its init; returns once the guest's own
        file system view is in place (well before cloud-init is done)."""
        _require_root()
        with self._lock:
            if self._holder is not None:
                raise GuestHostError(f"guest {self.spec.key} was already booted")
            the_plan = planner.build_plan(
                self.spec.uid,
                self.spec.hostname,
                self.spec.datasource,
                self.spec.user_data,
                self.spec.network_data,
            )
            (self._root / plan.PLAN_FILE).write_text(the_plan.dumps())
            (self._root / plan.BUNDLE_FILE).write_bytes(bundle.shipped().data)
            for sub in (plan.UPPER_DIR, plan.WORK_DIR):
                (self._root / sub).mkdir(exist_ok=True)
            guestnet.ensure_bridge()
            self._address = guestnet.allocate_address(self.spec.key, self._netns, self._state_dir)
            self._write_record(state="booting", address=self._address, mac=self.mac)
            try:
                guestnet.create_network(self._netns, self._veth, self._address, self.mac)
                self._start_init()
            except BaseException:
                self._abort_boot()
                raise
            self._write_record(
                state="running",
                holder_pid=self._holder.pid if self._holder else None,
                init_pid=self._init_pid,
                init_start=self._init_start,
            )
            threading.Thread(target=self._watch, name=f"guest-{self._id}", daemon=True).start()
        self._wait_view_ready()

    def _start_init(self) -> None:
        argv = [
            "nsenter",
            f"--net=/run/netns/{self._netns}",
            "--",
            "unshare",
            "--mount",
            "--uts",
            "--ipc",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            sys.executable,
            "-I",
            "-S",
            str(self._root / plan.BUNDLE_FILE),
            "boot",
            str(self._root),
        ]
        with open(self._root / plan.CONSOLE_LOG, "ab") as console:
            self._holder = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                env={"PATH": GUEST_PATH, "LANG": "C.UTF-8", "HOME": "/root"},
            )
        holder = self._holder.pid
        deadline = time.monotonic() + _BOOT_WAIT
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{holder}/task/{holder}/children").read_text().split()
                comm = Path(f"/proc/{holder}/comm").read_text().strip()
            except OSError:
                children, comm = [], ""
            if comm == "unshare" and children:
                self._init_pid = int(children[0])
                self._init_start = _start_time(self._init_pid)
                break
            if self._holder.poll() is not None:
                raise GuestHostError(
                    f"guest {self.spec.key} died while booting: {self._console_tail()}"
                )
            time.sleep(0.002)
        else:
            raise GuestHostError(f"guest {self.spec.key}: no init process after {_BOOT_WAIT}s")
        # The pid namespace link changes when the child execs nothing but unshare's fork is
        # done: read it until it differs from ours.
        own = _pid_namespace(os.getpid())
        while time.monotonic() < deadline:
            ns = _pid_namespace(self._init_pid)
            if ns is not None and ns != own:
                self._pid_ns = ns
                break
            time.sleep(0.002)

    def _wait_view_ready(self) -> None:
        status = self._root / plan.STATUS_FILE
        deadline = time.monotonic() + _BOOT_WAIT
        while not status.exists():
            if self._exited.is_set():
                raise GuestHostError(
                    f"guest {self.spec.key} died while booting: {self._console_tail()}"
                )
            if time.monotonic() > deadline:
                tail = self._console_tail()
                self.kill()  # a half-booted guest is not left behind
                raise GuestHostError(
                    f"guest {self.spec.key} did not come up in {_BOOT_WAIT}s: {tail}"
                )
            time.sleep(0.005)

    def _console_tail(self) -> str:
        try:
            return (self._root / plan.CONSOLE_LOG).read_text(errors="replace")[-2000:]
        except OSError:
            return "(no console output)"

    def _abort_boot(self) -> None:
        if self._holder is not None:
            if self._init_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._init_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._holder.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._holder.wait(10)
        self._release_network()
        self._write_record(state="failed")

    def _release_network(self) -> None:
        guestnet.release(self._netns, self._veth, self._address)

    def _watch(self) -> None:
        assert self._holder is not None
        code = self._holder.wait()
        if code == 1 and (
            "sigprocmask unblock failed" in self._console_tail()[-300:] or self._killed
        ):
            # unshare cannot re-raise SIGKILL on itself: it reports its child's death by
            # SIGKILL as status 1 with this message. Report it the way subprocess does.
            code = -int(signal.SIGKILL)
        # PID 1 is gone, so is every process of its PID namespace; processes that entered
        # the network namespace alone (none of ours) are killed with it.
        try:
            self._release_network()
        finally:
            self._exit_code = code
            self._write_record(state="exited", exit_code=code)
            self._read_status()
            self._exited.set()

    def alive(self) -> bool:
        """True from boot() until the guest's PID 1 is gone."""
        if self._holder is None or self._exited.is_set():
            return False
        return _same_process(self._init_pid, self._init_start)

    def wait_exit(self, timeout: float | None) -> int | None:
        """Wait until the guest is powered off and its network released; its exit status
        (0 after a clean shutdown, -9 after kill(), as subprocess reports signals)."""
        if self._holder is None:
            raise GuestHostError(f"guest {self.spec.key} was never booted")
        if not self._exited.wait(timeout):
            return None
        return self._exit_code

    def kill(self) -> None:
        """Power off at once: SIGKILL to PID 1, so the kernel kills every guest process."""
        if self._holder is None or self._exited.is_set():
            return
        if _same_process(self._init_pid, self._init_start):
            self._killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGKILL)
        if self.wait_exit(30.0) is None:
            raise GuestHostError(f"guest {self.spec.key} survived SIGKILL of its PID 1")

    def shutdown(self, grace_seconds: float) -> None:
        """ACPI-like power button: the guest stops its services (SIGTERM, then SIGKILL
        after their stop timeouts); whatever still runs after the grace period is killed."""
        if self._holder is None or self._exited.is_set():
            return
        if grace_seconds <= 0:
            self.kill()
            return
        with contextlib.suppress(ProcessLookupError):
            if _same_process(self._init_pid, self._init_start):
                os.kill(self._init_pid, signal.SIGTERM)
        if self.wait_exit(grace_seconds) is None:
            self.kill()

    # ---- inside the guest

    def exec(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside the guest (all its namespaces), as root, cwd /."""
        if not self.alive():
            raise GuestHostError(f"guest {self.spec.key} is not running")
        return subprocess.run(
            ["nsenter", "-t", str(self._init_pid), "-m", "-u", "-i", "-n", "-p", "--", *argv],
            capture_output=True,
            timeout=timeout,
            cwd="/",
            env={"PATH": GUEST_PATH, "LANG": "C.UTF-8", "HOME": "/root", "USER": "root"},
        )

    def cloud_init_status(self) -> str:
        """ "running" | "done" | "error", as `cloud-init status` in the guest says."""
        self._read_status()
        return self._last_status

    def _read_status(self) -> None:
        with contextlib.suppress(OSError, plan.PlanError):
            self._last_status = plan.decode_status((self._root / plan.STATUS_FILE).read_bytes())

    def _agent(self, requests: list[dict[str, Any]], timeout: float = 2.0) -> list[dict[str, Any]]:
        if not self.alive():
            raise GuestHostError(f"guest {self.spec.key} is not running")
        path = str(self._root / plan.QGA_SOCKET)
        dir_fd = None
        if len(path) > 100:  # AF_UNIX paths are short: go through a directory descriptor
            dir_fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY)
            path = f"/proc/self/fd/{dir_fd}/{plan.QGA_SOCKET}"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                stream = sock.makefile("rwb")
                replies = []
                for request in requests:
                    stream.write(json.dumps(request).encode() + b"\n")
                    stream.flush()
                    line = stream.readline()
                    if not line:
                        raise GuestHostError(f"guest {self.spec.key}: agent closed the channel")
                    reply = json.loads(line)
                    if "error" in reply:
                        raise GuestHostError(f"guest {self.spec.key}: agent error {reply['error']}")
                    replies.append(reply)
                return replies
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def agent_connected(self) -> bool:
        """The guest's agent answers guest-sync with our id (as KubeVirt checks qemu-ga)."""
        token = int.from_bytes(os.urandom(4), "big")
        try:
            reply = self._agent([{"execute": "guest-sync", "arguments": {"id": token}}], 1.0)
        except (OSError, GuestHostError, ValueError):
            return False
        return reply[0].get("return") == token

    def guest_info(self) -> dict[str, Any]:
        """hostname, os (guest-get-osinfo's fields), timezone and interfaces, from the agent."""
        host, osinfo, zone, interfaces = self._agent(
            [
                {"execute": "guest-get-host-name"},
                {"execute": "guest-get-osinfo"},
                {"execute": "guest-get-timezone"},
                {"execute": "guest-network-get-interfaces"},
            ]
        )
        return {
            "hostname": host["return"]["host-name"],
            "os": osinfo["return"],
            "timezone": zone["return"],
            "interfaces": interfaces["return"],
        }

    def agent_command(self, execute: str, arguments: dict[str, Any] | None = None) -> Any:
        """Any qemu-guest-agent command the guest supports (guest-exec, ...); its return."""
        request: dict[str, Any] = {"execute": execute}
        if arguments:
            request["arguments"] = arguments
        return self._agent([request])[0].get("return")


# --------------------------------------------------------------------------- cleanup


def cleanup_stale(state_dir: Path) -> None:
    """Power off and remove every guest a crashed earlier run left under state_dir: its
    processes, network namespace, veth, address and folder. Call it before the simulator
    boots guests, never while guests of this state_dir are running."""
    state_dir = Path(state_dir).resolve()
    guests = state_dir / "guests"
    if guests.is_dir():
        for record_path in sorted(guests.glob("*/guest.json")):
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                record = {}
            _cleanup_record(record)
            shutil.rmtree(record_path.parent, ignore_errors=True)
        for leftover in guests.iterdir():
            if leftover.is_dir() and not (leftover / "guest.json").exists():
                shutil.rmtree(leftover, ignore_errors=True)
    if os.geteuid() == 0:
        guestnet.release_state_dir(state_dir)


def _cleanup_record(record: dict[str, Any]) -> None:
    init_pid, init_start = record.get("init_pid"), record.get("init_start")
    if init_pid and _same_process(init_pid, init_start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGKILL)
        _wait_gone(init_pid, init_start, 10.0)
    holder_pid = record.get("holder_pid")
    if holder_pid:
        # unshare exits by itself once it has reaped the guest's PID 1; killing it first
        # would leave that PID 1 a zombie for the host's init to reap. Only a holder that
        # lingers is killed.
        holder_start = _start_time(holder_pid)
        comm = ""
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{holder_pid}/comm").read_text().strip()
        if comm in ("unshare", "nsenter") and not _wait_gone(holder_pid, holder_start, 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder_pid, signal.SIGKILL)
            _wait_gone(holder_pid, holder_start, 5.0)
    netns, veth = record.get("netns"), record.get("veth")
    if netns and veth and os.geteuid() == 0:
        guestnet.release(netns, veth, record.get("address") or "")
