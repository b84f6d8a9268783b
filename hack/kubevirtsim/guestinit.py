"""PID 1 of a simulated guest host: a tiny systemd, cloud-init runner and guest agent.

A simulated VMI is a set of Linux namespaces, not a VM; something inside them must do what
a guest's init system, cloud-init and qemu-guest-agent do, or guestha's agent (a systemd
service that cloud-init installs) could not run there. This program is that something. It
uses the standard library only and runs under the host's python3.

``guestinit.py boot GUEST_DIR`` runs as PID 1 of the guest's PID namespace (started by
``guesthost.py``): it makes the guest's private file system view (overlays and tmpfs),
carries out the cloud-init plan that the host wrote (``plan.json``, see ``cloudinit.py``),
supervises services, answers a qemu-guest-agent-like JSON protocol on GUEST_DIR/qga.sock,
and on SIGTERM shuts down like systemd (services stopped in reverse order, then every
process killed). The same file is the guest's ``systemctl``, ``systemd-run``, ``journalctl``
and ``cloud-init`` commands: small clients of PID 1's control socket.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import ctypes
import datetime
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

RUN_DIR = "/run/guesthost"
CONTROL_SOCK = f"{RUN_DIR}/control.sock"
SELF_COPY = f"{RUN_DIR}/guestinit.py"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host folders the guest sees through a private overlay (writes land in GUEST_DIR/upper).
OVERLAY_DIRS = ("/etc", "/opt", "/var", "/srv", "/home", "/root", "/usr", "/mnt", "/media")
TMPFS_DIRS = (("/run", "mode=0755"), ("/tmp", "mode=1777"), ("/dev/shm", "mode=1777"))
SHIMS = ("systemctl", "systemd-run", "journalctl", "cloud-init")
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/transient",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
CLOUD_INIT_OUTPUT = "/var/log/cloud-init-output.log"
CLOUD_INIT_LOG = "/var/log/cloud-init.log"
STATUS_MIRROR = "cloud-init-status.json"  # in GUEST_DIR, for the host to read
BOOT_TIME = time.monotonic()
_TRANSIENT_IDS = itertools.count(1)


def overlay_name(path: str) -> str:
    """The name of a guest folder's upper/work directory under GUEST_DIR."""
    return path.strip("/").replace("/", "_") or "root"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def console(message: str) -> None:
    """A line on the guest's console (GUEST_DIR/console.log on the host)."""
    sys.stdout.write(f"[{time.monotonic() - BOOT_TIME:9.3f}] {message}\n")
    sys.stdout.flush()


def guest_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": GUEST_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "SHELL": "/bin/sh",
    }
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- mounts

_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND = 4096


def mount(source: str, target: str, fstype: str, flags: int = 0, options: str = "") -> None:
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
        name = overlay_name(path)
        os.makedirs(f"{base}/upper/{name}", exist_ok=True)
        os.makedirs(f"{base}/work/{name}", exist_ok=True)
        mount(
            "overlay",
            path,
            "overlay",
            0,
            f"lowerdir={path},upperdir={base}/upper/{name},workdir={base}/work/{name}",
        )
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


# --------------------------------------------------------------------------- processes


class Child:
    """A process PID 1 waits for: spawned by it, or adopted (a daemon that forked)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[Child], None]] = []
        self._lock = threading.Lock()

    def on_exit(self, callback: Callable[[Child], None]) -> None:
        with self._lock:
            if self.returncode is None:
                self._callbacks.append(callback)
                return
        callback(self)

    def finish(self, code: int) -> None:
        with self._lock:
            self.returncode = code
            callbacks, self._callbacks = self._callbacks, []
        self._done.set()
        for callback in callbacks:
            try:
                callback(self)
            except Exception as exc:  # a callback bug must not kill the reaper
                console(f"exit callback of pid {self.pid} failed: {exc!r}")

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.returncode


class Reaper:
    """PID 1's one waitpid(-1) loop: it reaps every zombie, orphans included, and hands
    exit statuses to the Child objects waiting for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[int, Child] = {}
        self._unclaimed: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._wake = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            except InterruptedError:
                continue
            code = os.waitstatus_to_exitcode(status)
            with self._lock:
                child = self._children.pop(pid, None)
                if child is None:
                    self._unclaimed[pid] = code
                    while len(self._unclaimed) > 512:
                        self._unclaimed.popitem(last=False)
            if child is not None:
                child.finish(code)

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str = "/",
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = None,
        stderr: Any = None,
        executable: str | None = None,
    ) -> Child:
        """Start a process in a session of its own; raises OSError when it cannot exec."""
        with self._lock:
            proc = subprocess.Popen(
                argv,
                executable=executable,
                env=env,
                cwd=cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
            )
            # The reaper owns this pid's status: keep Popen from ever waiting for it.
            proc.returncode = 0
            child = Child(proc.pid)
            code = self._unclaimed.pop(proc.pid, None)
            if code is None:
                self._children[proc.pid] = child
        self._wake.set()
        if code is not None:
            child.finish(code)
        return child

    def adopt(self, pid: int) -> Child:
        """Watch a process this init did not start itself (it was reparented to PID 1)."""
        child = Child(pid)
        with self._lock:
            code = self._unclaimed.pop(pid, None)
            if code is None:
                self._children[pid] = child
        if code is not None:
            child.finish(code)
        elif not pid_exists(pid):
            with self._lock:
                self._children.pop(pid, None)
            child.finish(0)
        return child

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        timeout: float | None = None,
        stdout: Any = None,
        stderr: Any = None,
        cwd: str = "/",
        stdin: Any = subprocess.DEVNULL,
    ) -> int:
        """Run a command to its end (killed at the timeout); its exit code."""
        child = self.spawn(argv, env=env, stdout=stdout, stderr=stderr, cwd=cwd, stdin=stdin)
        code = child.wait(timeout)
        if code is None:
            kill_session(child.pid, signal.SIGKILL)
            code = child.wait(5.0)
        return code if code is not None else -int(signal.SIGKILL)


def pid_exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def process_table() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, session id, comm) of every live process of this PID namespace."""
    table = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        table.append((int(entry), int(fields[1]), int(fields[3]), comm))
    return table


def kill_session(sid: int, sig: int) -> None:
    for pid, _, session, _ in process_table():
        if session == sid and pid != 1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


# --------------------------------------------------------------------------- units


def parse_timespan(value: str, default: float) -> float:
    """A systemd time span ("90", "5s", "100ms", "1min 30s", "infinity") in seconds."""
    text = value.strip().lower()
    if not text:
        return default
    if text == "infinity":
        return float("inf")
    units = {
        "us": 1e-6,
        "usec": 1e-6,
        "ms": 1e-3,
        "msec": 1e-3,
        "s": 1.0,
        "sec": 1.0,
        "second": 1.0,
        "seconds": 1.0,
        "m": 60.0,
        "min": 60.0,
        "minute": 60.0,
        "minutes": 60.0,
        "h": 3600.0,
        "hr": 3600.0,
        "hour": 3600.0,
        "hours": 3600.0,
        "d": 86400.0,
        "day": 86400.0,
        "days": 86400.0,
    }
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", text):
        factor = units.get(unit or "s")
        if factor is None:
            raise ValueError(f"unknown time unit {unit!r} in {value!r}")
        total += float(number) * factor
    return total


def parse_signal(value: str) -> int:
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


@dataclass
class Command:
    """One Exec*= line: its words (unexpanded) and its prefixes."""

    words: list[str]
    ignore_failure: bool
    line: str


@dataclass
class UnitConfig:
    """The parts of a service unit file the simulator understands."""

    name: str
    path: str
    description: str = ""
    type: str = "simple"
    exec_start: list[Command] = field(default_factory=list)
    exec_start_pre: list[Command] = field(default_factory=list)
    exec_start_post: list[Command] = field(default_factory=list)
    exec_stop: list[Command] = field(default_factory=list)
    exec_stop_post: list[Command] = field(default_factory=list)
    exec_reload: list[Command] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[tuple[str, bool]] = field(default_factory=list)
    working_directory: str = "/"
    user: str = ""
    restart: str = "no"
    restart_sec: float = 0.1
    timeout_start: float = 90.0
    timeout_stop: float = 90.0
    kill_signal: int = int(signal.SIGTERM)
    kill_mode: str = "control-group"
    send_sigkill: bool = True
    remain_after_exit: bool = False
    pid_file: str = ""
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    success_exit_status: set[int] = field(default_factory=set)
    wanted_by: list[str] = field(default_factory=list)
    required_by: list[str] = field(default_factory=list)
    has_install: bool = False
    warnings: list[str] = field(default_factory=list)


def read_unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """An INI-like unit file: sections of (key, value) in order, continuation lines joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if pending:
            line = pending + " " + line
            pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), [])
            continue
        if current is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def parse_command(value: str, specifiers: Callable[[str], str]) -> Command | None:
    """An Exec*= value: prefixes (-@+!:), then shell-like words; '' resets the list."""
    line = value.strip()
    if not line:
        return None
    ignore = False
    while line and line[0] in "-@+!:":
        if line[0] == "-":
            ignore = True
        line = line[1:]
    words = shlex.split(specifiers(line))
    if not words:
        return None
    return Command(words, ignore, value)


def unit_specifiers(name: str, hostname: str) -> Callable[[str], str]:
    prefix, _, rest = name.rpartition(".")[0].partition("@")
    instance = rest
    table = {
        "n": name,
        "N": name.rpartition(".")[0],
        "p": prefix,
        "i": instance,
        "I": instance,
        "t": "/run",
        "h": "/root",
        "u": "root",
        "U": "0",
        "H": hostname,
        "%": "%",
    }

    def expand(text: str) -> str:
        return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), text)

    return expand


def parse_unit(name: str, path: str, text: str, dropins: list[str]) -> UnitConfig:
    """Read a service unit (and its drop-ins, in order) into a UnitConfig."""
    cfg = UnitConfig(name=name, path=path)
    spec = unit_specifiers(name, socket.gethostname())
    lists = {
        "ExecStart": cfg.exec_start,
        "ExecStartPre": cfg.exec_start_pre,
        "ExecStartPost": cfg.exec_start_post,
        "ExecStop": cfg.exec_stop,
        "ExecStopPost": cfg.exec_stop_post,
        "ExecReload": cfg.exec_reload,
    }
    for source in [text, *dropins]:
        sections = read_unit_sections(source)
        for key, value in sections.get("Unit", []):
            if key == "Description":
                cfg.description = value
            elif key in ("StartLimitIntervalSec", "StartLimitInterval"):
                cfg.start_limit_interval = parse_timespan(value, 10.0)
            elif key == "StartLimitBurst":
                cfg.start_limit_burst = int(value)
        if "Install" in sections:
            cfg.has_install = True
        for key, value in sections.get("Install", []):
            if key == "WantedBy":
                cfg.wanted_by.extend(value.split())
            elif key == "RequiredBy":
                cfg.required_by.extend(value.split())
        for key, value in sections.get("Service", []):
            if key in lists:
                target = lists[key]
                command = parse_command(value, spec)
                if command is None:
                    target.clear()
                else:
                    target.append(command)
            elif key == "Type":
                cfg.type = value.lower()
            elif key == "Environment":
                for item in shlex.split(spec(value)):
                    k, sep, v = item.partition("=")
                    if sep:
                        cfg.environment[k] = v
            elif key == "EnvironmentFile":
                optional = value.startswith("-")
                cfg.environment_files.append((spec(value.lstrip("-")), optional))
            elif key == "WorkingDirectory":
                cfg.working_directory = spec(value.lstrip("-")).replace("~", "/root") or "/"
            elif key == "User":
                cfg.user = spec(value)
            elif key == "Restart":
                cfg.restart = value.lower()
            elif key == "RestartSec":
                cfg.restart_sec = parse_timespan(value, 0.1)
            elif key == "TimeoutStartSec":
                cfg.timeout_start = parse_timespan(value, 90.0)
            elif key == "TimeoutStopSec":
                cfg.timeout_stop = parse_timespan(value, 90.0)
            elif key == "TimeoutSec":
                cfg.timeout_start = cfg.timeout_stop = parse_timespan(value, 90.0)
            elif key == "KillSignal":
                cfg.kill_signal = parse_signal(value)
            elif key == "KillMode":
                cfg.kill_mode = value.lower()
            elif key == "SendSIGKILL":
                cfg.send_sigkill = value.lower() in ("yes", "true", "1", "on")
            elif key == "RemainAfterExit":
                cfg.remain_after_exit = value.lower() in ("yes", "true", "1", "on")
            elif key == "PIDFile":
                cfg.pid_file = spec(value)
            elif key == "SuccessExitStatus":
                for word in value.split():
                    if word.isdigit():
                        cfg.success_exit_status.add(int(word))
                    else:
                        with contextlib.suppress(ValueError):
                            cfg.success_exit_status.add(-parse_signal(word))
            elif key in ("StartLimitIntervalSec", "StartLimitInterval"):
                cfg.start_limit_interval = parse_timespan(value, 10.0)
            elif key == "StartLimitBurst":
                cfg.start_limit_burst = int(value)
    if cfg.type not in ("simple", "exec", "oneshot", "notify", "forking", "idle", "dbus"):
        cfg.warnings.append(f"Type={cfg.type} unknown, treated as simple")
        cfg.type = "simple"
    if cfg.user not in ("", "root", "0"):
        cfg.warnings.append(f"User={cfg.user} not supported in the simulator: runs as root")
    if not cfg.exec_start and cfg.type != "oneshot":
        cfg.warnings.append("no ExecStart=")
    return cfg


def normalize_unit(name: str) -> str:
    if "." not in name.rsplit("/", 1)[-1] or not re.search(
        r"\.(service|target|socket|timer|path|mount|scope|slice)$", name
    ):
        return name + ".service"
    return name


def find_unit_file(name: str) -> str | None:
    """The unit's file in the search path (a template for foo@bar), or None."""
    candidates = [name]
    if "@" in name:
        prefix, _, rest = name.partition("@")
        candidates.append(f"{prefix}@.{rest.rpartition('.')[2]}")
    for candidate in candidates:
        for directory in UNIT_DIRS:
            path = f"{directory}/{candidate}"
            if os.path.lexists(path):
                return path
    return None


def is_masked(name: str) -> bool:
    for directory in ("/etc/systemd/system", "/run/systemd/system"):
        path = f"{directory}/{name}"
        if os.path.islink(path) and os.readlink(path) == "/dev/null":
            return True
    return False


def load_unit(name: str) -> UnitConfig | None:
    path = find_unit_file(name)
    if path is None or is_masked(name):
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    dropins: list[str] = []
    base = path.rsplit("/", 1)[1]
    for directory in UNIT_DIRS:
        for dname in dict.fromkeys([f"{directory}/{name}.d", f"{directory}/{base}.d"]):
            if os.path.isdir(dname):
                for conf in sorted(os.listdir(dname)):
                    if conf.endswith(".conf"):
                        with open(f"{dname}/{conf}") as f:
                            dropins.append(f.read())
    return parse_unit(name, path, text, dropins)


def expand_words(words: list[str], env: dict[str, str]) -> list[str]:
    """systemd's $VAR (split into words) and ${VAR} (one word) expansion; $$ is '$'."""
    out: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            out.extend(env.get(whole.group(1), "").split())
            continue
        expanded = re.sub(
            r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
            lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1) or m.group(2), ""),
            word,
        )
        out.append(expanded)
    return out


def read_environment_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip()
            if key.startswith("export "):
                key = key[7:].strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key] = value
    return env


def resolve_executable(word: str) -> str:
    if word.startswith("/"):
        return word
    found = shutil.which(word, path=GUEST_PATH)
    if found is None:
        raise FileNotFoundError(2, f"executable {word!r} not found in {GUEST_PATH}")
    return found


# --------------------------------------------------------------------------- services


@dataclass
class Service:
    """The runtime state of one unit, as systemd tracks it."""

    name: str
    cfg: UnitConfig | None = None
    active_state: str = "inactive"
    sub_state: str = "dead"
    result: str = "success"
    main: Child | None = None
    main_pid: int = 0
    exec_main_status: int = 0
    exec_main_code: str = ""
    sessions: set[int] = field(default_factory=set)
    n_restarts: int = 0
    starts: collections.deque[float] = field(default_factory=collections.deque)
    generation: int = 0
    stopping: bool = False
    since: float = 0.0
    job_lock: threading.Lock = field(default_factory=threading.Lock)


class JobFailed(Exception):
    """A start/stop job that failed; the message is what systemctl prints."""


class ServiceManager:
    """Starts, stops and restarts services the way systemd's service units behave."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.services: dict[str, Service] = {}
        self.start_order: list[str] = []
        self.shutting_down = False

    def get(self, name: str) -> Service:
        with self.lock:
            svc = self.services.get(name)
            if svc is None:
                svc = self.services[name] = Service(name)
            return svc

    def log_path(self, name: str) -> str:
        return f"/var/log/{name}.log"

    def _log(self, name: str, message: str) -> None:
        try:
            with open(self.log_path(name), "a") as f:
                f.write(f"{now_iso()} guestinit: {message}\n")
        except OSError:
            pass
        console(f"{name}: {message}")

    def _set(self, svc: Service, active: str, sub: str, result: str | None = None) -> None:
        with self.lock:
            if svc.active_state != active:
                svc.since = time.time()
            svc.active_state, svc.sub_state = active, sub
            if result is not None:
                svc.result = result
            self.changed.notify_all()

    def _environment(self, cfg: UnitConfig, svc: Service) -> dict[str, str]:
        env = guest_env({"INVOCATION_ID": os.urandom(16).hex()})
        for path, optional in cfg.environment_files:
            try:
                env.update(read_environment_file(path))
            except OSError as exc:
                if not optional:
                    raise JobFailed(
                        f"Failed to load environment files: {path}: {exc.strerror}"
                    ) from None
        env.update(cfg.environment)
        if svc.main_pid:
            env["MAINPID"] = str(svc.main_pid)
        return env

    def _spawn(self, cfg: UnitConfig, command: Command, env: dict[str, str]) -> Child:
        words = expand_words(command.words, env)
        if not words:
            raise FileNotFoundError(2, f"empty command line: {command.line}")
        executable = resolve_executable(words[0])
        cwd = cfg.working_directory if os.path.isdir(cfg.working_directory) else "/"
        with open(self.log_path(cfg.name), "ab") as log:
            return self.reaper.spawn(
                words, executable=executable, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
            )

    def _run_control(
        self, svc: Service, cfg: UnitConfig, commands: list[Command], timeout: float, what: str
    ) -> None:
        for command in commands:
            env = self._environment(cfg, svc)
            try:
                child = self._spawn(cfg, command, env)
            except OSError as exc:
                if command.ignore_failure:
                    continue
                raise JobFailed(f"{what} {command.line!r} could not run: {exc}") from None
            svc.sessions.add(child.pid)
            code = child.wait(None if timeout == float("inf") else timeout)
            if code is None:
                kill_session(child.pid, signal.SIGKILL)
                child.wait(5.0)
                raise JobFailed(f"{what} timed out") from None
            if code != 0 and not command.ignore_failure:
                raise JobFailed(f"{what} {command.line!r} exited with status {code}")

    # ---- start

    def start(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            self._start_locked(svc, auto=False)

    def _start_locked(self, svc: Service, auto: bool) -> None:
        with self.lock:
            if self.shutting_down:
                raise JobFailed("Transaction is destructive: the guest is shutting down.")
            if svc.active_state in ("active", "reloading") or (
                svc.active_state == "activating" and svc.sub_state != "auto-restart"
            ):
                return
            if not auto:
                svc.generation += 1
        if svc.name.endswith(".target"):
            self._set(svc, "active", "active", "success")
            return
        if is_masked(svc.name):
            raise JobFailed(f"Failed to start {svc.name}: Unit {svc.name} is masked.")
        cfg = load_unit(svc.name)
        if cfg is None:
            raise JobFailed(f"Failed to start {svc.name}: Unit {svc.name} not found.")
        if not svc.name.endswith(".service"):
            raise JobFailed(f"Failed to start {svc.name}: only service units are simulated.")
        for warning in cfg.warnings:
            self._log(svc.name, f"warning: {warning}")
        now = time.monotonic()
        while svc.starts and now - svc.starts[0] > cfg.start_limit_interval:
            svc.starts.popleft()
        if cfg.start_limit_burst > 0 and len(svc.starts) >= cfg.start_limit_burst:
            self._set(svc, "failed", "failed", "start-limit-hit")
            raise JobFailed(f"Job for {svc.name} failed: start request repeated too quickly.")
        svc.starts.append(now)
        with self.lock:
            svc.cfg = cfg
            svc.sessions = set()
            if svc.name in self.start_order:
                self.start_order.remove(svc.name)
            self.start_order.append(svc.name)
        self._set(svc, "activating", "start-pre", "success")
        try:
            self._run_control(svc, cfg, cfg.exec_start_pre, cfg.timeout_start, "ExecStartPre")
            if cfg.type == "oneshot":
                self._set(svc, "activating", "start")
                self._run_control(svc, cfg, cfg.exec_start, cfg.timeout_start, "ExecStart")
                self._run_control(svc, cfg, cfg.exec_start_post, cfg.timeout_start, "ExecStartPost")
                if cfg.remain_after_exit:
                    self._set(svc, "active", "exited", "success")
                else:
                    self._set(svc, "inactive", "dead", "success")
                return
            if not cfg.exec_start:
                raise JobFailed(f"Unit {svc.name} has no ExecStart= setting.")
            if cfg.type == "forking":
                self._start_forking(svc, cfg)
            else:
                env = self._environment(cfg, svc)
                try:
                    child = self._spawn(cfg, cfg.exec_start[0], env)
                except OSError as exc:
                    with self.lock:
                        svc.exec_main_status, svc.exec_main_code = 203, "exited"
                    self._log(svc.name, f"Failed to execute {cfg.exec_start[0].line}: {exc}")
                    self._set(svc, "failed", "failed", "exit-code")
                    if cfg.type == "exec":
                        raise JobFailed(
                            f"Job for {svc.name} failed because the service "
                            "process could not be executed."
                        ) from None
                    return
                # Running first: a main process that exits at once (ExecStart=/bin/false)
                # must leave its exit's state (auto-restart, failed), not be overwritten.
                self._set(svc, "active", "running", "success")
                self._track_main(svc, child)
            self._run_control(svc, cfg, cfg.exec_start_post, cfg.timeout_start, "ExecStartPost")
        except JobFailed as exc:
            self._log(svc.name, str(exc))
            self._kill_all(svc, signal.SIGKILL)
            with self.lock:
                svc.main, svc.main_pid = None, 0
            self._set(svc, "failed", "failed", "exit-code")
            raise JobFailed(
                f"Job for {svc.name} failed because the control process exited "
                f"with error code. ({exc})"
            ) from None

    def _start_forking(self, svc: Service, cfg: UnitConfig) -> None:
        before = {pid for pid, _, _, _ in process_table()}
        env = self._environment(cfg, svc)
        try:
            starter = self._spawn(cfg, cfg.exec_start[0], env)
        except OSError as exc:
            raise JobFailed(f"ExecStart could not run: {exc}") from None
        svc.sessions.add(starter.pid)
        code = starter.wait(None if cfg.timeout_start == float("inf") else cfg.timeout_start)
        if code != 0:
            raise JobFailed(f"ExecStart exited with status {code}")
        pid = 0
        if cfg.pid_file:
            for _ in range(50):
                try:
                    with open(cfg.pid_file) as f:
                        pid = int(f.read().split()[0])
                    break
                except (OSError, ValueError, IndexError):
                    time.sleep(0.02)
        if not pid:
            orphans = sorted(
                p for p, ppid, _, _ in process_table() if ppid == 1 and p not in before and p != 1
            )
            pid = orphans[0] if orphans else 0
        if not pid:
            raise JobFailed("could not find the main process of the forking service")
        child = self.reaper.adopt(pid)
        self._set(svc, "active", "running", "success")  # before: see the simple case
        self._track_main(svc, child)

    def _track_main(self, svc: Service, child: Child) -> None:
        with self.lock:
            svc.main, svc.main_pid = child, child.pid
            svc.sessions.add(child.pid)
            with contextlib.suppress(OSError):
                svc.sessions.add(os.getsid(child.pid))
        child.on_exit(lambda c: self._main_exited(svc, c))

    def _main_exited(self, svc: Service, child: Child) -> None:
        code = child.returncode if child.returncode is not None else 0
        with self.lock:
            if svc.main is not child:
                return
            svc.main, svc.main_pid = None, 0
            svc.exec_main_status = -code if code < 0 else code
            svc.exec_main_code = "killed" if code < 0 else "exited"
            if svc.stopping:
                self.changed.notify_all()
                return
            cfg = svc.cfg
            assert cfg is not None
            clean = (
                code == 0
                or code in cfg.success_exit_status
                or code in (-signal.SIGHUP, -signal.SIGINT, -signal.SIGTERM, -signal.SIGPIPE)
            )
            result = "success" if clean else ("signal" if code < 0 else "exit-code")
            restart = {
                "always": True,
                "on-success": clean,
                "on-failure": not clean,
                "on-abnormal": code < 0 and not clean,
                "on-abort": code < 0 and not clean,
                "on-watchdog": False,
            }.get(cfg.restart, False)
            self._log(
                svc.name,
                f"main process exited, status {code} ({result})"
                + ("; scheduling restart" if restart and not self.shutting_down else ""),
            )
            if restart and not self.shutting_down:
                self._set(svc, "activating", "auto-restart", result)
                generation = svc.generation
                timer = threading.Timer(cfg.restart_sec, self._auto_restart, (svc, generation))
                timer.daemon = True
                timer.start()
            else:
                self._set(
                    svc, "inactive" if clean else "failed", "dead" if clean else "failed", result
                )
                threading.Thread(target=self._stop_leftovers, args=(svc, cfg), daemon=True).start()

    def _stop_leftovers(self, svc: Service, cfg: UnitConfig) -> None:
        if cfg.kill_mode == "none" or not self._unit_pids(svc):
            return
        self._kill_all(svc, cfg.kill_signal)
        self._wait_gone(svc, min(cfg.timeout_stop, 10.0))
        if cfg.send_sigkill:
            self._kill_all(svc, signal.SIGKILL)

    def _auto_restart(self, svc: Service, generation: int) -> None:
        with svc.job_lock:
            with self.lock:
                if svc.generation != generation or svc.sub_state != "auto-restart":
                    return
                svc.n_restarts += 1
            cfg = svc.cfg
            if cfg is not None:
                self._kill_all(svc, signal.SIGKILL)
            try:
                self._start_locked(svc, auto=True)
            except JobFailed as exc:
                self._log(svc.name, f"automatic restart failed: {exc}")

    # ---- stop

    def _unit_pids(self, svc: Service) -> list[int]:
        with self.lock:
            sessions = set(svc.sessions)
            main = svc.main_pid
        pids = [pid for pid, _, sid, _ in process_table() if sid in sessions and pid != 1]
        if main and main not in pids and pid_exists(main):
            pids.append(main)
        return pids

    def _kill_all(self, svc: Service, sig: int, main_only: bool = False) -> list[int]:
        pids = [svc.main_pid] if main_only and svc.main_pid else self._unit_pids(svc)
        for pid in pids:
            try:
                os.kill(pid, sig)
                if sig not in (signal.SIGKILL, signal.SIGCONT):
                    os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return pids

    def _wait_gone(self, svc: Service, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                main_alive = svc.main is not None
            if not main_alive and not self._unit_pids(svc):
                return True
            if time.monotonic() >= deadline:
                return False
            with self.lock:
                self.changed.wait(0.05)

    def stop(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            self._stop_locked(svc)

    def _stop_locked(self, svc: Service, timeout_cap: float | None = None) -> None:
        with self.lock:
            svc.generation += 1
            cfg = svc.cfg
            if (
                cfg is None
                or svc.active_state in ("inactive", "failed")
                or (svc.sub_state == "auto-restart")
            ):
                if svc.sub_state == "auto-restart":
                    self._set(svc, "inactive", "dead")
                return
            svc.stopping = True
        timeout = cfg.timeout_stop if timeout_cap is None else min(cfg.timeout_stop, timeout_cap)
        self._set(svc, "deactivating", "stop")
        try:
            try:
                self._run_control(svc, cfg, cfg.exec_stop, timeout, "ExecStop")
            except JobFailed as exc:
                self._log(svc.name, str(exc))
            if cfg.kill_mode != "none":
                self._kill_all(
                    svc, cfg.kill_signal, main_only=cfg.kill_mode in ("process", "mixed")
                )
            if not self._wait_gone(svc, timeout) and cfg.send_sigkill:
                self._log(svc.name, "stop timed out, killing")
                self._kill_all(svc, signal.SIGKILL)
                self._wait_gone(svc, 5.0)
            elif cfg.kill_mode == "mixed":
                self._kill_all(svc, signal.SIGKILL)
            try:
                self._run_control(svc, cfg, cfg.exec_stop_post, timeout, "ExecStopPost")
            except JobFailed as exc:
                self._log(svc.name, str(exc))
        finally:
            with self.lock:
                svc.stopping = False
                svc.main, svc.main_pid = None, 0
            self._set(svc, "inactive", "dead", "success")

    def restart(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            self._stop_locked(svc)
            self._start_locked(svc, auto=False)

    def reload(self, name: str) -> None:
        svc = self.get(name)
        with svc.job_lock:
            cfg = svc.cfg
            if cfg is None or svc.active_state != "active":
                raise JobFailed(f"Failed to reload {name}: unit not active.")
            if not cfg.exec_reload:
                raise JobFailed(
                    f"Failed to reload {name}: Job type reload is not applicable for unit."
                )
            self._run_control(svc, cfg, cfg.exec_reload, cfg.timeout_start, "ExecReload")

    def kill(self, name: str, sig: int, whom: str) -> None:
        svc = self.get(name)
        pids = self._kill_all(svc, sig, main_only=whom == "main")
        if not pids:
            raise JobFailed(f"Failed to kill unit {name}: No process to kill")

    def shutdown(self, deadline: float) -> None:
        """Stop every service in reverse start order, within the deadline."""
        with self.lock:
            self.shutting_down = True
            order = list(reversed(self.start_order))
        for name in order:
            svc = self.get(name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not svc.job_lock.acquire(timeout=remaining):
                console(f"stopping {name}: a job on it did not finish in time")
                continue
            try:
                self._stop_locked(svc, timeout_cap=remaining)
            except Exception as exc:
                console(f"stopping {name} failed: {exc!r}")
            finally:
                svc.job_lock.release()


# --------------------------------------------------------------------------- systemctl

ACTIVE_EXIT = {"active": 0, "reloading": 0}


def unit_file_state(name: str) -> str | None:
    if is_masked(name):
        return "masked"
    path = find_unit_file(name)
    if path is None:
        return None
    if path.startswith("/run/systemd/transient/"):
        return "transient"
    for directory in ("/etc/systemd/system", "/run/systemd/system"):
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            if entry.endswith((".wants", ".requires")) and os.path.lexists(
                f"{directory}/{entry}/{name}"
            ):
                return "enabled"
    cfg = load_unit(name)
    if cfg is not None and not (cfg.wanted_by or cfg.required_by):
        return "static"
    return "disabled"


@dataclass
class Reply:
    rc: int = 0
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rc": self.rc,
            "out": "".join(f"{line}\n" for line in self.out),
            "err": "".join(f"{line}\n" for line in self.err),
        }


def _split_options(
    argv: list[str], with_value: Collection[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """GNU-style options (--x=v, --x v, -x v) and the positional arguments."""
    opts: dict[str, list[str]] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            args.extend(argv[i + 1 :])
            break
        if arg.startswith("--"):
            key, sep, value = arg.partition("=")
            if not sep and key in with_value and i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            opts.setdefault(key, []).append(value)
        elif arg.startswith("-") and len(arg) > 1:
            key = arg[:2]
            if key in with_value:
                value = arg[2:]
                if not value and i + 1 < len(argv):
                    value = argv[i + 1]
                    i += 1
                opts.setdefault(key, []).append(value)
            else:
                for letter in arg[1:]:
                    opts.setdefault(f"-{letter}", []).append("")
        else:
            args.append(arg)
        i += 1
    return opts, args


def systemctl(manager: ServiceManager, argv: list[str]) -> Reply:
    """The systemctl verbs a cloud-init script or guestha's agent uses."""
    opts, args = _split_options(
        argv,
        {
            "-p",
            "--property",
            "-P",
            "-s",
            "--signal",
            "--kill-whom",
            "--kill-who",
            "-n",
            "--lines",
            "-t",
            "--type",
            "--state",
            "-o",
            "--output",
        },
    )
    reply = Reply()
    if "--user" in opts:
        return Reply(1, [], ["Failed to connect to bus: user services are not simulated"])
    if not args:
        args = ["list-units"]
    verb, names = args[0], [normalize_unit(n) for n in args[1:]]
    quiet = "--quiet" in opts or "-q" in opts
    now = "--now" in opts

    def need_units() -> bool:
        if not names:
            reply.rc = 1
            reply.err.append(f"Too few arguments for {verb}.")
            return False
        return True

    def run_job(job: Callable[[str], None], name: str) -> None:
        try:
            job(name)
        except JobFailed as exc:
            reply.rc = 1 if "not found" not in str(exc) else 5
            reply.err.append(str(exc))

    if verb in ("daemon-reload", "daemon-reexec", "reset-failed"):
        if verb == "reset-failed":
            for svc in list(manager.services.values()):
                if (not names or svc.name in names) and svc.active_state == "failed":
                    manager._set(svc, "inactive", "dead", "success")
                    svc.starts.clear()
        return reply
    if verb in (
        "start",
        "stop",
        "restart",
        "try-restart",
        "reload",
        "reload-or-restart",
        "force-reload",
    ):
        if not need_units():
            return reply
        for name in names:
            svc = manager.get(name)
            if verb == "start":
                run_job(manager.start, name)
            elif verb == "stop":
                run_job(manager.stop, name)
            elif verb in ("restart", "force-reload") or (
                verb == "reload-or-restart" and not (svc.cfg and svc.cfg.exec_reload)
            ):
                run_job(manager.restart, name)
            elif verb == "try-restart":
                if svc.active_state == "active":
                    run_job(manager.restart, name)
            else:
                run_job(manager.reload, name)
        return reply
    if verb in ("enable", "disable", "reenable", "mask", "unmask"):
        if not need_units():
            return reply
        for name in names:
            _unit_file_verb(manager, verb, name, now, reply, run_job)
        return reply
    if verb in ("is-active", "is-failed"):
        if not need_units():
            return reply
        states = [manager.get(n).active_state for n in names]
        for state in states:
            if not quiet:
                reply.out.append(state)
        if verb == "is-active":
            reply.rc = 0 if any(s in ACTIVE_EXIT for s in states) else 3
        else:
            reply.rc = 0 if any(s == "failed" for s in states) else 1
        return reply
    if verb == "is-enabled":
        if not need_units():
            return reply
        found = False
        for name in names:
            file_state = unit_file_state(name)
            if file_state is None:
                reply.err.append(
                    f"Failed to get unit file state for {name}: No such file or directory"
                )
                reply.rc = 1
                continue
            if not quiet:
                reply.out.append(file_state)
            found = found or file_state in ("enabled", "static", "transient", "alias")
        if reply.rc == 0:
            reply.rc = 0 if found else 1
        return reply
    if verb == "status":
        return _status(manager, names, reply)
    if verb == "show":
        return _show(manager, names or [], opts, reply)
    if verb == "cat":
        for name in names:
            path = find_unit_file(name)
            if path is None:
                reply.rc = 1
                reply.err.append(f"No files found for {name}.")
                continue
            with open(path) as f:
                reply.out.append(f"# {path}")
                reply.out.extend(f.read().rstrip("\n").splitlines())
        return reply
    if verb == "kill":
        if not need_units():
            return reply
        sig_names = opts.get("--signal", []) + opts.get("-s", [])
        try:
            sig = parse_signal(sig_names[-1]) if sig_names else int(signal.SIGTERM)
        except ValueError as exc:
            return Reply(1, [], [str(exc)])
        whom = (opts.get("--kill-whom", []) + opts.get("--kill-who", []) or ["all"])[-1]
        for name in names:
            run_job(lambda n: manager.kill(n, sig, whom), name)
        return reply
    if verb in ("list-units", "list-unit-files"):
        with manager.lock:
            services = sorted(manager.services.values(), key=lambda s: s.name)
        reply.out.append("UNIT LOAD ACTIVE SUB DESCRIPTION")
        for svc in services:
            if svc.cfg is None:
                continue
            reply.out.append(
                f"{svc.name} loaded {svc.active_state} {svc.sub_state} {svc.cfg.description}"
            )
        return reply
    if verb == "is-system-running":
        reply.out.append("stopping" if manager.shutting_down else "running")
        return reply
    if verb in ("poweroff", "halt", "reboot", "kexec"):
        os.kill(1, signal.SIGTERM)
        if verb == "reboot":
            reply.err.append("reboot: the simulated guest powers off (a reboot is a new guest)")
        return reply
    return Reply(1, [], [f"Unknown command verb {verb} (not simulated)."])


def _unit_file_verb(
    manager: ServiceManager,
    verb: str,
    name: str,
    now: bool,
    reply: Reply,
    run_job: Callable[[Callable[[str], None], str], None],
) -> None:
    etc = "/etc/systemd/system"
    if verb == "mask":
        os.makedirs(etc, exist_ok=True)
        if os.path.lexists(f"{etc}/{name}"):
            os.unlink(f"{etc}/{name}")
        os.symlink("/dev/null", f"{etc}/{name}")
        reply.err.append(f"Created symlink {etc}/{name} \u2192 /dev/null.")
        if now:
            run_job(manager.stop, name)
        return
    if verb == "unmask":
        if is_masked(name):
            os.unlink(f"{etc}/{name}")
            reply.err.append(f'Removed "{etc}/{name}".')
        return
    if verb in ("disable", "reenable"):
        if find_unit_file(name) is None:
            reply.rc = 1
            reply.err.append(f"Failed to disable unit: Unit file {name} does not exist.")
            return
        if os.path.isdir(etc):
            for entry in sorted(os.listdir(etc)):
                link = f"{etc}/{entry}/{name}"
                if entry.endswith((".wants", ".requires")) and os.path.lexists(link):
                    os.unlink(link)
                    reply.err.append(f'Removed "{link}".')
        if verb == "disable":
            if now:
                run_job(manager.stop, name)
            return
    cfg = load_unit(name)
    if cfg is None:
        reply.rc = 1
        reply.err.append(
            f"Failed to enable unit: Unit file {name} does not exist."
            if not is_masked(name)
            else f"Failed to enable unit: Unit file {etc}/{name} is masked."
        )
        return
    targets = [f"{t}.wants" for t in cfg.wanted_by] + [f"{t}.requires" for t in cfg.required_by]
    if not targets:
        reply.err.append(
            "The unit files have no installation config (WantedBy=, RequiredBy=, Also=,\n"
            "Alias= settings in the [Install] section, and DefaultInstance= for template\n"
            "units). This means they are not meant to be enabled or disabled using systemctl."
        )
    for target in targets:
        os.makedirs(f"{etc}/{target}", exist_ok=True)
        link = f"{etc}/{target}/{name}"
        if not os.path.lexists(link):
            os.symlink(cfg.path, link)
            reply.err.append(f"Created symlink {link} \u2192 {cfg.path}.")
    if now or (verb == "reenable" and manager.get(name).active_state == "active"):
        run_job(manager.start if verb == "enable" else manager.restart, name)


def _ago(since: float) -> str:
    if not since:
        return "n/a"
    stamp = datetime.datetime.fromtimestamp(since).strftime("%a %Y-%m-%d %H:%M:%S")
    return f"{stamp}; {max(0.0, time.time() - since):.0f}s ago"


def _status(manager: ServiceManager, names: list[str], reply: Reply) -> Reply:
    if not names:
        reply.out.append(f"\u25cf {socket.gethostname()}")
        reply.out.append("    State: " + ("stopping" if manager.shutting_down else "running"))
        return reply
    worst = 0
    for name in names:
        svc = manager.get(name)
        cfg = svc.cfg or load_unit(name)
        if cfg is None and svc.cfg is None:
            reply.err.append(f"Unit {name} could not be found.")
            worst = max(worst, 4)
            continue
        assert cfg is not None
        file_state = unit_file_state(name) or "disabled"
        dot = (
            "\u25cf"
            if svc.active_state == "active"
            else ("\u00d7" if svc.active_state == "failed" else "\u25cb")
        )
        reply.out.append(f"{dot} {name} - {cfg.description or name}")
        reply.out.append(f"     Loaded: loaded ({cfg.path}; {file_state})")
        state = f"{svc.active_state} ({svc.sub_state})"
        if svc.active_state == "failed":
            state += f" Result: {svc.result}"
        reply.out.append(f"     Active: {state} since {_ago(svc.since)}")
        if svc.main_pid:
            comm = ""
            try:
                with open(f"/proc/{svc.main_pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                pass
            reply.out.append(f"   Main PID: {svc.main_pid} ({comm})")
        pids = manager._unit_pids(svc)
        if pids:
            reply.out.append(f"      Tasks: {len(pids)}")
        try:
            with open(manager.log_path(name), errors="replace") as f:
                tail = f.read().splitlines()[-10:]
            reply.out.append("")
            reply.out.extend(tail)
        except OSError:
            pass
        worst = max(worst, 0 if svc.active_state in ACTIVE_EXIT else 3)
    reply.rc = worst
    return reply


def _show(
    manager: ServiceManager, names: list[str], opts: dict[str, list[str]], reply: Reply
) -> Reply:
    wanted: list[str] = []
    for value in opts.get("-p", []) + opts.get("--property", []) + opts.get("-P", []):
        wanted.extend(p.strip() for p in value.split(",") if p.strip())
    value_only = "--value" in opts or "-P" in opts
    for index, name in enumerate(names):
        svc = manager.get(name)
        cfg = svc.cfg or load_unit(name)
        load_state = "masked" if is_masked(name) else ("loaded" if cfg else "not-found")
        props: dict[str, str] = {
            "Id": name,
            "Names": name,
            "Description": cfg.description if cfg else "",
            "LoadState": load_state,
            "ActiveState": svc.active_state,
            "SubState": svc.sub_state,
            "Result": svc.result,
            "MainPID": str(svc.main_pid),
            "ExecMainPID": str(svc.main_pid),
            "ExecMainStatus": str(svc.exec_main_status),
            "ExecMainCode": svc.exec_main_code,
            "NRestarts": str(svc.n_restarts),
            "UnitFileState": unit_file_state(name) or "",
            "FragmentPath": cfg.path if cfg else "",
            "Type": cfg.type if cfg else "",
            "Restart": cfg.restart if cfg else "",
            "CanStart": "yes" if cfg else "no",
        }
        if index:
            reply.out.append("")
        for key in wanted or list(props):
            if key in props:
                reply.out.append(props[key] if value_only else f"{key}={props[key]}")
            elif not value_only:
                reply.out.append(f"{key}=")
    return reply


# systemd-run options that take a value (the command starts after them).
SYSTEMD_RUN_VALUED_OPTIONS = frozenset({
    "-u", "--unit", "-p", "--property", "--description", "--service-type", "-E", "--setenv",
    "--working-directory", "--uid", "--gid", "--slice", "--on-active",
})


def systemd_run(manager: ServiceManager, argv: list[str], cwd: str) -> Reply:
    """A transient service, as `systemd-run --unit=NAME CMD...` makes one."""
    opts, args = _split_options(
        argv[: _command_start(argv)],
        SYSTEMD_RUN_VALUED_OPTIONS,
    )
    command = argv[_command_start(argv) :] or args
    if "--user" in opts or "--scope" in opts or "--pty" in opts or "-t" in opts:
        return Reply(1, [], ["systemd-run: --user, --scope and --pty are not simulated"])
    if not command:
        return Reply(1, [], ["Command line to execute required."])
    unit = (opts.get("--unit", []) + opts.get("-u", []) or [f"run-u{next(_TRANSIENT_IDS)}"])[-1]
    unit = normalize_unit(unit)
    if find_unit_file(unit) is not None or manager.get(unit).active_state in (
        "active",
        "activating",
    ):
        return Reply(
            1,
            [],
            [
                f"Failed to start transient service unit: Unit {unit} was "
                "already loaded or has a fragment file."
            ],
        )
    lines = [
        "[Unit]",
        f"Description={(opts.get('--description') or ['/'.join(command)])[-1]}",
        "",
        "[Service]",
    ]
    service_type = (opts.get("--service-type") or ["simple"])[-1]
    lines.append(f"Type={service_type}")
    if "--remain-after-exit" in opts or "-r" in opts:
        lines.append("RemainAfterExit=yes")
    for item in opts.get("-E", []) + opts.get("--setenv", []):
        lines.append(f"Environment={_systemd_quote(item)}")
    workdir = (opts.get("--working-directory") or [""])[-1]
    if "--same-dir" in opts or "-d" in opts:
        workdir = cwd
    if workdir:
        lines.append(f"WorkingDirectory={workdir}")
    for prop in opts.get("-p", []) + opts.get("--property", []):
        lines.append(prop)
    lines.append("ExecStart=" + " ".join(_systemd_quote(word) for word in command))
    os.makedirs("/run/systemd/transient", exist_ok=True)
    with open(f"/run/systemd/transient/{unit}", "w") as f:
        f.write("\n".join(lines) + "\n")
    reply = Reply()
    try:
        manager.start(unit)
    except JobFailed as exc:
        return Reply(1, [], [str(exc)])
    if "--quiet" not in opts and "-q" not in opts:
        reply.err.append(f"Running as unit: {unit}")
    if "--wait" in opts:
        svc = manager.get(unit)
        with manager.lock:
            while svc.active_state in ("active", "activating", "deactivating"):
                manager.changed.wait(1.0)
        reply.rc = svc.exec_main_status
    return reply


def _command_start(argv: list[str]) -> int:
    """Index of the command in a systemd-run argv: the first word that is no option or an
    option's value."""
    with_value = SYSTEMD_RUN_VALUED_OPTIONS
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return i + 1
        if not arg.startswith("-"):
            return i
        if arg in with_value:
            i += 1
        i += 1
    return len(argv)


def _systemd_quote(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return '"' + escaped.replace("%", "%%") + '"'


def journalctl(manager: ServiceManager, argv: list[str]) -> Reply:
    opts, _ = _split_options(argv, {"-u", "--unit", "-n", "--lines", "-o", "--output"})
    units = [normalize_unit(u) for u in opts.get("-u", []) + opts.get("--unit", [])]
    count = (opts.get("-n", []) + opts.get("--lines", []) or [""])[-1]
    paths = [manager.log_path(u) for u in units] or [CLOUD_INIT_OUTPUT]
    lines: list[str] = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                lines.extend(f.read().splitlines())
        except OSError:
            pass
    if count.isdigit():
        lines = lines[-int(count) :] if int(count) else []
    if not lines:
        return Reply(0, ["-- No entries --"], [])
    return Reply(0, lines, [])


# --------------------------------------------------------------------------- cloud-init


class CloudInitRunner:
    """Carries out the host's plan (cloudinit.Plan as JSON) and reports like cloud-init."""

    def __init__(self, plan: dict[str, Any], reaper: Reaper, mirror: Callable[[str], None]) -> None:
        self.plan = plan
        self.reaper = reaper
        self.mirror = mirror
        self.datasource = f"DataSource{plan['datasource']}"
        seed = (
            "/var/lib/cloud/seed/nocloud"
            if plan["datasource"] == "NoCloud"
            else "/var/lib/cloud/seed/config_drive"
        )
        self.datasource_long = f"{self.datasource} [seed={seed}]"
        self.status: dict[str, Any] = {"v1": {"datasource": None, "stage": None}}
        for stage in plan["stages"]:
            self.status["v1"][stage["name"]] = {"errors": [], "start": None, "finished": None}
        self.errors: list[str] = []
        self.done = threading.Event()
        self.state = "running"

    def log(self, level: str, message: str) -> None:
        with open(CLOUD_INIT_LOG, "a") as f:
            f.write(f"{now_iso()} - guestinit[{level}]: {message}\n")

    def output(self, message: str) -> None:
        with open(CLOUD_INIT_OUTPUT, "a") as f:
            f.write(message + "\n")

    def _write_status(self) -> None:
        os.makedirs("/run/cloud-init", exist_ok=True)
        with open("/run/cloud-init/status.json.tmp", "w") as f:
            json.dump(self.status, f, indent=1)
        os.replace("/run/cloud-init/status.json.tmp", "/run/cloud-init/status.json")

    def run(self) -> None:
        self.mirror("running")
        self.log("INFO", f"Cloud-init v. {self.plan['version']} running (simulated guest)")
        for note in self.plan.get("notes", []):
            console(f"cloud-init: {note}")
        for stage in self.plan["stages"]:
            name = stage["name"]
            record = self.status["v1"][name]
            self.status["v1"]["stage"] = name
            record["start"] = time.time()
            if name != "init-local":
                self.status["v1"]["datasource"] = self.datasource_long
            self._write_status()
            label = {"modules-config": "modules:config", "modules-final": "modules:final"}.get(
                name, name
            )
            self.output(
                f"Cloud-init v. {self.plan['version']} running '{label}' at "
                f"{time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}. "
                f"Up {time.monotonic() - BOOT_TIME:.2f} seconds."
            )
            for module in stage["modules"]:
                error = self._run_module(module["name"], module["steps"])
                if error:
                    text = f"('{module['name']}', RuntimeError({error!r}))"
                    record["errors"].append(text)
                    self.errors.append(text)
                    self.log("WARNING", f"Running module {module['name']} failed: {error}")
            record["finished"] = time.time()
            self._write_status()
        self.status["v1"]["stage"] = None
        self._write_status()
        with open("/run/cloud-init/result.json", "w") as f:
            json.dump(
                {"v1": {"datasource": self.datasource_long, "errors": self.errors}}, f, indent=1
            )
        self.state = "error" if self.errors else "done"
        self.mirror(self.state)
        self.done.set()
        console(f"cloud-init {self.state} after {time.monotonic() - BOOT_TIME:.3f}s")

    def _run_module(self, name: str, steps: list[dict[str, Any]]) -> str | None:
        self.log("DEBUG", f"Running module {name}")
        try:
            for step in steps:
                error = self._step(name, step)
                if error:
                    return error
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _command(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        with open(CLOUD_INIT_OUTPUT, "ab") as out:
            try:
                return self.reaper.run(
                    argv, env=guest_env(env), stdout=out, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                out.write(f"{argv[0]}: {exc}\n".encode())
                return 126

    def _step(self, module: str, step: dict[str, Any]) -> str | None:
        op = step["op"]
        if op == "write":
            path = step["path"]
            os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
            data = base64.b64decode(step["data"])
            with open(path, "ab" if step.get("append") else "wb") as f:
                f.write(data)
            os.chmod(path, int(step.get("mode", 0o644)))
            return None
        if op == "symlink":
            path = step["path"]
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.lexists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            os.symlink(step["target"], path)
            return None
        if op == "log":
            self.log("WARNING", step["message"])
            return None
        if op == "fail":
            self.log("ERROR", step["message"])
            self.output(f"{module}: {step['message']}")
            return str(step["message"])
        if op == "run":
            code = self._command(list(step["argv"]), step.get("env"))
            if code != 0:
                return (
                    f"Unexpected error while running command. Command: {step['argv']} "
                    f"Exit code: {code}"
                )
            return None
        if op == "runparts":
            failed: list[str] = []
            attempted = 0
            for path in step["paths"]:
                if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                    continue
                attempted += 1
                if self._command([path], {"INSTANCE_ID": self.plan["instance_id"]}) != 0:
                    failed.append(os.path.basename(path))
            if failed:
                return (
                    f"Runparts: {len(failed)} failures ({','.join(failed)}) in "
                    f"{attempted} attempted commands"
                )
            return None
        if op == "hostname":
            socket.sethostname(step["hostname"])
            with open("/etc/hostname", "w") as f:
                f.write(step["hostname"] + "\n")
            fqdn = step["fqdn"]
            set_hosts_entry(
                step["hostname"] if fqdn == step["hostname"] else f"{fqdn} {step['hostname']}"
            )
            os.makedirs("/var/lib/cloud/data", exist_ok=True)
            with open("/var/lib/cloud/data/previous-hostname", "w") as f:
                f.write(step["fqdn"] + "\n")
            return None
        if op == "timezone":
            zone = step["zone"]
            zone_file = f"/usr/share/zoneinfo/{zone}"
            if not os.path.isfile(zone_file):
                return f"Invalid timezone {zone!r}: {zone_file} does not exist"
            with open("/etc/timezone", "w") as f:
                f.write(zone + "\n")
            if os.path.lexists("/etc/localtime"):
                os.unlink("/etc/localtime")
            os.symlink(zone_file, "/etc/localtime")
            return None
        if op == "final_message":
            uptime = time.monotonic() - BOOT_TIME
            self.output(
                f"Cloud-init v. {self.plan['version']} finished at "
                f"{time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}. "
                f"Datasource {self.datasource_long}.  Up {uptime:.2f} seconds"
            )
            instance = f"/var/lib/cloud/instances/{self.plan['instance_id']}"
            with open(f"{instance}/boot-finished", "w") as f:
                f.write(f"{uptime:.2f} - {time.ctime()} - v. {self.plan['version']}\n")
            return None
        return f"unknown plan step {op!r}"


def cloud_init_state() -> tuple[str, dict[str, Any]]:
    """`cloud-init status` from the files cloud-init leaves in /run/cloud-init."""
    try:
        with open("/run/cloud-init/result.json") as f:
            result = json.load(f)
        errors = result["v1"]["errors"]
        return ("error" if errors else "done"), result
    except (OSError, ValueError, KeyError):
        pass
    if os.path.exists("/run/cloud-init/status.json"):
        return "running", {}
    return "not run", {}


def cloud_init_command(argv: list[str], runner: CloudInitRunner | None) -> Reply:
    opts, args = _split_options(argv, {"--format"})
    if not args or args[0] != "status":
        return Reply(1, [], ["cloud-init: only `cloud-init status` is simulated"])
    if "--wait" in opts or "-w" in opts:
        while runner is not None and not runner.done.wait(0.2):
            pass
    state, result = cloud_init_state()
    reply = Reply(1 if state == "error" else 0)
    if (opts.get("--format") or [""])[-1] == "json":
        reply.out.append(
            json.dumps({"status": state, "errors": result.get("v1", {}).get("errors", [])})
        )
        return reply
    reply.out.append(f"status: {state}")
    if "--long" in opts or "-l" in opts:
        reply.out.append(f"detail:\n{result.get('v1', {}).get('datasource', '')}")
        for error in result.get("v1", {}).get("errors", []):
            reply.out.append(f"errors: {error}")
    return reply


# --------------------------------------------------------------------------- guest agent


def os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        info[key] = value.strip().strip('"')
            break
        except OSError:
            continue
    return info


def qga_osinfo() -> dict[str, str]:
    release = os_release()
    uname = os.uname()
    return {
        "id": release.get("ID", ""),
        "name": release.get("NAME", ""),
        "pretty-name": release.get("PRETTY_NAME", ""),
        "version": release.get("VERSION", ""),
        "version-id": release.get("VERSION_ID", ""),
        "kernel-release": uname.release,
        "kernel-version": uname.version,
        "machine": uname.machine,
    }


def qga_timezone() -> dict[str, Any]:
    zone = ""
    try:
        with open("/etc/timezone") as f:
            zone = f.read().strip()
    except OSError:
        pass
    if not zone and os.path.islink("/etc/localtime"):
        zone = os.readlink("/etc/localtime").split("zoneinfo/", 1)[-1]
    return {"zone": zone or "UTC", "offset": -time.timezone}


def qga_interfaces() -> list[dict[str, Any]]:
    result = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, env=guest_env()
    )
    interfaces = []
    for link in json.loads(result.stdout or "[]"):
        addresses = [
            {
                "ip-address-type": "ipv4" if a.get("family") == "inet" else "ipv6",
                "ip-address": a.get("local"),
                "prefix": a.get("prefixlen"),
            }
            for a in link.get("addr_info", [])
        ]
        interfaces.append(
            {
                "name": link.get("ifname"),
                "hardware-address": link.get("address", ""),
                "ip-addresses": addresses,
            }
        )
    return interfaces


def _serve_each(
    listener: socket.socket, serve: Callable[[socket.socket], None], name: str
) -> None:
    """Accept connections on `listener` in a daemon thread called `name`, each served by
    `serve` in a daemon thread of its own."""

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, name=name, daemon=True).start()


class GuestAgent:
    """A qemu-guest-agent-like JSON line protocol on GUEST_DIR/qga.sock."""

    def __init__(
        self, listener: socket.socket, reaper: Reaper, shutdown: Callable[[], None]
    ) -> None:
        self.listener = listener
        self.reaper = reaper
        self.shutdown = shutdown
        self.execs: dict[int, tuple[Child, str, str]] = {}

    def start(self) -> None:
        _serve_each(self.listener, self._serve, "qga")

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                    reply = self.handle(request)
                except Exception as exc:
                    reply = {"error": {"class": "GenericError", "desc": str(exc)}}
                if reply is None:
                    continue
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        command = request.get("execute", "")
        args = request.get("arguments") or {}
        if command == "guest-ping":
            return {"return": {}}
        if command in ("guest-sync", "guest-sync-delimited"):
            return {"return": args.get("id")}
        if command == "guest-info":
            return {"return": {"version": "7.2.0-kubevirtsim", "supported_commands": []}}
        if command == "guest-get-host-name":
            return {"return": {"host-name": socket.gethostname()}}
        if command == "guest-get-osinfo":
            return {"return": qga_osinfo()}
        if command == "guest-get-timezone":
            return {"return": qga_timezone()}
        if command == "guest-network-get-interfaces":
            return {"return": qga_interfaces()}
        if command == "guest-shutdown":
            self.shutdown()
            return None  # qemu-guest-agent does not answer a successful shutdown
        if command == "guest-exec":
            return {"return": {"pid": self._exec(args)}}
        if command == "guest-exec-status":
            return {"return": self._exec_status(int(args["pid"]))}
        return {
            "error": {
                "class": "CommandNotFound",
                "desc": f"The command {command} has not been found",
            }
        }

    def _exec(self, args: dict[str, Any]) -> int:
        os.makedirs(f"{RUN_DIR}/exec", exist_ok=True)
        token = os.urandom(6).hex()
        out_path, err_path = f"{RUN_DIR}/exec/{token}.out", f"{RUN_DIR}/exec/{token}.err"
        env = guest_env(dict(e.split("=", 1) for e in args.get("env", []) if "=" in e))
        in_path = "/dev/null"
        if args.get("input-data"):
            in_path = f"{RUN_DIR}/exec/{token}.in"
            with open(in_path, "wb") as data:
                data.write(base64.b64decode(args["input-data"]))
        with open(in_path, "rb") as stdin, open(out_path, "wb") as out, open(err_path, "wb") as err:
            child = self.reaper.spawn(
                [args["path"], *args.get("arg", [])],
                env=env,
                stdin=stdin,
                stdout=out,
                stderr=err,
                executable=resolve_executable(args["path"]),
            )
        self.execs[child.pid] = (child, out_path, err_path)
        return child.pid

    def _exec_status(self, pid: int) -> dict[str, Any]:
        child, out_path, err_path = self.execs[pid]
        if child.returncode is None:
            return {"exited": False}
        del self.execs[pid]
        status: dict[str, Any] = {"exited": True}
        if child.returncode < 0:
            status["signal"] = -child.returncode
        else:
            status["exitcode"] = child.returncode
        for key, path in (("out-data", out_path), ("err-data", err_path)):
            with open(path, "rb") as f:
                data = f.read()
            os.unlink(path)
            if data:
                status[key] = base64.b64encode(data).decode()
        return status


# --------------------------------------------------------------------------- PID 1


class ControlServer:
    """The socket the guest's systemctl/systemd-run/journalctl/cloud-init shims talk to."""

    def __init__(self, manager: ServiceManager, runner: CloudInitRunner) -> None:
        self.manager = manager
        self.runner = runner
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(CONTROL_SOCK)
        self.listener.listen(64)

    def start(self) -> None:
        _serve_each(self.listener, self._serve, "control")

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            line = stream.readline()
            try:
                request = json.loads(line)
                reply = self.handle(
                    request["tool"], list(request["argv"]), str(request.get("cwd", "/"))
                )
            except Exception as exc:
                reply = Reply(1, [], [f"guestinit: {type(exc).__name__}: {exc}"])
            stream.write(json.dumps(reply.to_json()).encode() + b"\n")
            stream.flush()

    def handle(self, tool: str, argv: list[str], cwd: str) -> Reply:
        if tool == "systemctl":
            return systemctl(self.manager, argv)
        if tool == "systemd-run":
            return systemd_run(self.manager, argv, cwd)
        if tool == "journalctl":
            return journalctl(self.manager, argv)
        if tool == "cloud-init":
            return cloud_init_command(argv, self.runner)
        return Reply(1, [], [f"unknown tool {tool}"])


def install_shims(python: str) -> None:
    """The guest's systemctl & co.: overlay writes in the guest's /usr, never the host's."""
    os.makedirs(f"{RUN_DIR}/bin", exist_ok=True)
    for tool in SHIMS:
        text = f'#!/bin/sh\nexec {shlex.quote(python)} -I {SELF_COPY} {tool} "$@"\n'
        for directory in ("/usr/local/bin", "/usr/bin", f"{RUN_DIR}/bin"):
            if directory == "/usr/bin" and not os.path.exists(f"/usr/bin/{tool}"):
                continue
            os.makedirs(directory, exist_ok=True)
            tmp = f"{directory}/.{tool}.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, f"{directory}/{tool}")


def set_hosts_entry(hostname: str) -> None:
    """Debian's "127.0.1.1 HOSTNAME" line in the guest's /etc/hosts, so that the guest's own
    name resolves (without DNS) as it does on a Debian install."""
    try:
        with open("/etc/hosts") as f:
            lines = [line for line in f.read().splitlines() if not line.startswith("127.0.1.1")]
    except OSError:
        lines = ["127.0.0.1 localhost"]
    lines.append(f"127.0.1.1 {hostname}")
    with open("/etc/hosts", "w") as f:
        f.write("\n".join(lines) + "\n")


def boot(guest_dir: str) -> int:
    """PID 1's life: private view, services, cloud-init, then wait for the shutdown."""
    dir_fd = os.open(guest_dir, os.O_PATH | os.O_DIRECTORY)
    with open(os.path.join(guest_dir, "plan.json")) as f:
        plan = json.load(f)
    with open(__file__, "rb") as source:
        self_source = source.read()
    console(f"guest init for {plan['hostname']} (instance {plan['instance_id']})")

    # The agent socket lives in the host-visible guest dir: bind it before any mount.
    qga = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.chdir(guest_dir)
    if os.path.lexists("qga.sock"):
        os.unlink("qga.sock")
    qga.bind("qga.sock")
    qga.listen(16)
    os.chdir("/")

    make_private_view(dir_fd)
    socket.sethostname(plan["hostname"])
    os.makedirs(RUN_DIR, exist_ok=True)
    os.makedirs("/run/systemd/system", exist_ok=True)  # "booted with systemd" to scripts
    create_tmpfiles()
    with open(SELF_COPY, "wb") as copy:
        copy.write(self_source)
    install_shims(sys.executable)
    with open("/etc/hostname", "w") as f:
        f.write(plan["hostname"] + "\n")
    set_hosts_entry(plan["hostname"])
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
        f.write(plan["instance_id"].replace("-", "")[:32].ljust(32, "0") + "\n")

    def mirror(state: str) -> None:
        text = json.dumps({"status": state, "time": time.time()}).encode()
        tmp = os.open(
            f"{STATUS_MIRROR}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd
        )
        try:
            os.write(tmp, text)
        finally:
            os.close(tmp)
        os.replace(f"{STATUS_MIRROR}.tmp", STATUS_MIRROR, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    reaper = Reaper()
    reaper.start()
    manager = ServiceManager(reaper)
    runner = CloudInitRunner(plan, reaper, mirror)
    ControlServer(manager, runner).start()
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
    manager.shutdown(time.monotonic() + 90.0)
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


def client(tool: str, argv: list[str]) -> int:
    """A guest command (systemctl & co.): ask PID 1, print its answer, exit with its code."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(CONTROL_SOCK)
    except OSError as exc:
        sys.stderr.write(
            f"{tool}: System has not been booted by the simulated init "
            f"({CONTROL_SOCK}: {exc.strerror})\n"
        )
        return 1
    if tool == "systemd-run":
        start = _command_start(argv)
        if start < len(argv) and not argv[start].startswith("/"):
            found = shutil.which(argv[start])
            if found is None:
                sys.stderr.write(
                    f"Failed to find executable {argv[start]}: No such file or directory\n"
                )
                return 1
            argv = [*argv[:start], found, *argv[start + 1 :]]
    with sock, sock.makefile("rwb") as stream:
        stream.write(json.dumps({"tool": tool, "argv": argv, "cwd": os.getcwd()}).encode() + b"\n")
        stream.flush()
        reply = json.loads(stream.readline() or b'{"rc": 1, "out": "", "err": "no answer"}')
    sys.stdout.write(reply["out"])
    sys.stderr.write(reply["err"])
    return int(reply["rc"])


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "boot":
        if os.getpid() != 1:
            sys.stderr.write("guestinit boot: must run as PID 1 of a new PID namespace\n")
            return 2
        return boot(argv[2])
    if len(argv) >= 2 and argv[1] in SHIMS:
        return client(argv[1], argv[2:])
    sys.stderr.write(
        "usage: guestinit.py boot GUEST_DIR | systemctl|systemd-run|journalctl|cloud-init ARGS...\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
