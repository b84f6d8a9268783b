"""PID 1 of a simulated guest host: its boot, its private view, its shutdown.

``python3 -I -S GUEST_DIR/guestinit.pyz boot GUEST_DIR`` runs this as PID 1 of the guest's
new PID namespace (``kubevirtsim.guesthost`` starts it, in the guest's network, mount, UTS
and IPC namespaces too). Before any mount it binds the guest agent's socket in the
host-visible guest folder and reads the plan and its own zipapp; then it makes the guest's
private file system view (overlays over the host's folders, whose writes land in the guest
folder's upper dirs; private tmpfs for /run, /tmp, /dev/shm), installs the guest's
``systemctl`` & co. (shims that run the zipapp's ``client`` alone), starts the service manager,
the control socket, the guest agent and the cloud-init run, and waits. On SIGTERM it shuts
down like systemd: services stopped in reverse start order, then every process killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import socket
import sys
import threading
import time

from kubevirtsim.guestinit import client, plan
from kubevirtsim.guestinit.cloudinit_runner import CloudInitRunner, set_hosts_entry
from kubevirtsim.guestinit.env import console
from kubevirtsim.guestinit.processes import Reaper, process_table
from kubevirtsim.guestinit.qga import GuestAgent
from kubevirtsim.guestinit.services import ServiceManager
from kubevirtsim.guestinit.tools import ControlServer

# Host folders the guest sees through a private overlay (writes land in GUEST_DIR/upper).
OVERLAY_DIRS = ("/etc", "/opt", "/var", "/srv", "/home", "/root", "/usr", "/mnt", "/media")
TMPFS_DIRS = (("/run", "mode=0755"), ("/tmp", "mode=1777"), ("/dev/shm", "mode=1777"))
SHUTDOWN_TIMEOUT = 90.0  # seconds for stopping services, as systemd's default
SHIM_DIRS = ("/usr/local/bin", "/usr/bin", f"{client.RUN_DIR}/bin")


_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND = 4096


def mount(source: str, target: str, fstype: str, flags: int = 0, options: str = "") -> None:
    """mount(2); OSError naming the mount when it fails."""
    result = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        options.encode() if options else None,
    )
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(
            err, f"mount {fstype or 'bind'} {source} on {target} ({options}): {os.strerror(err)}"
        )


TMPFILES_DIRS = ("/usr/lib/tmpfiles.d", "/etc/tmpfiles.d", "/run/tmpfiles.d")


def create_tmpfiles() -> None:
    """The folders that systemd-tmpfiles makes at boot (`d`/`D` lines of tmpfiles.d): the
    guest's /run is empty, and packages such as resource-agents expect theirs there."""
    for folder in TMPFILES_DIRS:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".conf"):
                continue
            try:
                with open(os.path.join(folder, name)) as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 2 or fields[0] not in ("d", "D") or "%" in fields[1]:
                    continue
                mode = int(fields[2], 8) if len(fields) > 2 and fields[2].isdigit() else 0o755
                with contextlib.suppress(OSError):
                    os.makedirs(fields[1], exist_ok=True)
                    os.chmod(fields[1], mode)


def make_private_view(dir_fd: int) -> None:
    """Overlays over the host's folders, then private tmpfs; upper dirs found through the
    guest dir's file descriptor, so that no mount can hide them."""
    base = f"/proc/self/fd/{dir_fd}"
    for path in OVERLAY_DIRS:
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        name = plan.overlay_name(path)
        upper, work = f"{base}/{plan.UPPER_DIR}/{name}", f"{base}/{plan.WORK_DIR}/{name}"
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        mount("overlay", path, "overlay", 0, f"lowerdir={path},upperdir={upper},workdir={work}")
    for path, options in TMPFS_DIRS:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", 0, options)
    # sysfs shows the network devices of the namespace that mounts it: the guest's own.
    mount("sysfs", "/sys", "sysfs", 0, "")
    # The host's own /dev/vsock (when the host is itself a VM) is not the guest's: the
    # simulator stands in for a guest's vsock by dialling its loopback, so a guest sees no
    # vsock device, as a VM without virtio-vsock.
    if os.path.exists("/dev/vsock"):
        mount("/dev/null", "/dev/vsock", "", MS_BIND, "")


def shim(python: str, tool: str, bundle: str = plan.GUEST_BUNDLE) -> str:
    """The guest's `tool` command: the zipapp `bundle` on the path, ``client`` alone run.
    ``-c`` rather than running the zipapp: that would import runpy (and contextlib,
    functools, collections) at every call. ``-S``: the tools need nothing from
    site-packages, whose .pth files cost start-up time."""
    program = (
        f"import sys; sys.path.insert(0, {bundle!r}); "
        "from kubevirtsim.guestinit.client import main; sys.exit(main(sys.argv))"
    )
    return f'#!/bin/sh\nexec {shlex.quote(python)} -I -S -c {shlex.quote(program)} {tool} "$@"\n'


def install_shims(python: str) -> None:
    """The guest's systemctl & co.: overlay writes in the guest's /usr, never the host's."""
    os.makedirs(f"{client.RUN_DIR}/bin", exist_ok=True)
    for tool in client.TOOLS:
        text = shim(python, tool)
        for directory in SHIM_DIRS:
            if directory == "/usr/bin" and not os.path.exists(f"/usr/bin/{tool}"):
                continue
            os.makedirs(directory, exist_ok=True)
            tmp = f"{directory}/.{tool}.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, f"{directory}/{tool}")


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Replace GUEST_DIR/name atomically (the host may read it at any time)."""
    fd = os.open(f"{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(f"{name}.tmp", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _configure_system(hostname: str, instance_id: str, bundle: bytes) -> None:
    """The guest's own files before anything runs: its zipapp copy and shims, hostname,
    hosts, resolver and machine-id."""
    socket.sethostname(hostname)
    os.makedirs(client.RUN_DIR, exist_ok=True)
    os.makedirs("/run/systemd/system", exist_ok=True)  # "booted with systemd" to scripts
    create_tmpfiles()
    with open(plan.GUEST_BUNDLE, "wb") as copy:
        copy.write(bundle)
    os.chmod(plan.GUEST_BUNDLE, 0o444)
    install_shims(sys.executable)
    with open("/etc/hostname", "w") as f:
        f.write(hostname + "\n")
    set_hosts_entry(hostname)
    # No DNS server answers simulated guests: make lookups fail at once instead of timing
    # out against the host's resolver (Python's http.server, for one, looks its address up).
    if os.path.lexists("/etc/resolv.conf"):
        os.unlink("/etc/resolv.conf")
    with open("/etc/resolv.conf", "w") as f:
        f.write(
            "# kubevirtsim: no DNS server for simulated guests\nnameserver 127.0.0.1\n"
            "options timeout:1 attempts:1\n"
        )
    with open("/etc/machine-id", "w") as f:
        f.write(instance_id.replace("-", "")[:32].ljust(32, "0") + "\n")


def boot(guest_dir: str) -> int:
    """PID 1's life: private view, services, cloud-init, then wait for the shutdown."""
    dir_fd = os.open(guest_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        the_plan = plan.Plan.loads(_read_at(dir_fd, plan.PLAN_FILE))
    except (OSError, plan.PlanError) as exc:
        console(f"guest init: no usable {plan.PLAN_FILE}: {exc}")
        return 1
    bundle = _read_at(dir_fd, plan.BUNDLE_FILE)
    console(f"guest init for {the_plan.hostname} (instance {the_plan.instance_id})")

    # The agent socket lives in the host-visible guest dir: bind it before any mount.
    qga = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.chdir(guest_dir)
    if os.path.lexists(plan.QGA_SOCKET):
        os.unlink(plan.QGA_SOCKET)
    qga.bind(plan.QGA_SOCKET)
    qga.listen(16)
    os.chdir("/")

    make_private_view(dir_fd)
    _configure_system(the_plan.hostname, the_plan.instance_id, bundle)

    def mirror(state: str) -> None:
        _write_at(dir_fd, plan.STATUS_FILE, plan.encode_status(state, time.time()))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    reaper = Reaper()
    reaper.start()
    manager = ServiceManager(reaper)
    runner = CloudInitRunner(the_plan, reaper, mirror)
    ControlServer(manager, runner, client.CONTROL_SOCK).start()
    GuestAgent(qga, reaper, stop.set).start()
    mirror("running")

    def run_cloud_init() -> None:
        try:
            runner.run()
        except Exception as exc:
            console(f"cloud-init crashed: {exc!r}")
            runner.state = "error"
            mirror("error")
            runner.done.set()

    threading.Thread(target=run_cloud_init, name="cloud-init", daemon=True).start()
    while not stop.wait(1.0):
        pass

    console("shutdown requested: stopping services")
    manager.shutdown(time.monotonic() + SHUTDOWN_TIMEOUT)
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        try:
            os.kill(-1, sig)  # every other process of this PID namespace
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(p != 1 for p, *_ in process_table()):
            time.sleep(0.05)
    console("guest powered off")
    return 0


def main(argv: list[str]) -> int:
    """`boot GUEST_DIR`, as PID 1 of a new PID namespace."""
    if len(argv) != 3 or argv[1] != "boot":
        sys.stderr.write("usage: guestinit.pyz boot GUEST_DIR\n")
        return 2
    if os.getpid() != 1:
        sys.stderr.write("guestinit boot: must run as PID 1 of a new PID namespace\n")
        return 2
    return boot(argv[2])
