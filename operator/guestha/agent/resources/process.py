"""Process: a program the agent starts and keeps as its own child (VCS Process agent).

The agent starts the command in a new session, so the program and everything it forks form
one process group that offline and clean stop together. Its death is seen at once: the
exit watcher's pidfd becomes readable the moment it exits and asks for an immediate
monitor. The pid, the start time from /proc/PID/stat and the boot id are written to the
resource's directory, so a new agent process (after an agent restart) adopts a program
still running instead of starting a second copy, and watches it by pidfd as well.

The program's output (stdout and stderr) goes to output.log in that directory, opened for
appending. It is rotated by size, since it lives in the agent's state folder and a full
disk there stops the agent from saving its state: at each monitor, an output.log larger
than LOG_MAX_BYTES is copied to output.log.1 (older copies move up to .2 ... .LOG_KEEP,
the oldest is dropped) and emptied in place (the program keeps writing to it; appending,
its next line lands at the start). Each start moves the previous run's log to .1 the same
way. At most LOG_KEEP + 1 files of about LOG_MAX_BYTES each are kept, plus what the
program writes between two monitors. Lines written while a copy is being made may be lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping

from guestha.protocol import TYPE_CHECKING

from . import fsprobe, procfs
from .base import (
    ActionError,
    ActionTimeout,
    Attr,
    MonitorResult,
    Resource,
    ResourceContext,
    absolute_path,
    env_names,
    signal_name,
    signal_number,
)
from .programs import ENTER, Account, account, credentials, environment

if TYPE_CHECKING:
    from typing import Any

DEFAULT_STOP_SIGNAL = "SIGTERM"
DEFAULT_STOP_TIMEOUT = 10
PID_FILE = "process.json"
LOG_FILE = "output.log"
LOG_MAX_BYTES = 4 << 20  # output.log is rotated when a monitor finds it larger
LOG_KEEP = 3  # rotated copies kept: output.log.1 (newest) .. output.log.3
POLL_SECONDS = 0.02
COPY_CHUNK = 1 << 20


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value}"


def describe_exit(returncode: int) -> str:
    """"exited with status 3" or "killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rotate_log(path: str, new_run: bool = False) -> bool:
    """Rotate a program's output log when it is larger than LOG_MAX_BYTES (always, if it is
    not empty, for `new_run`); True if it was. See the module docstring."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    if size == 0 or (size <= LOG_MAX_BYTES and not new_run):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.{LOG_KEEP}")
    for i in range(LOG_KEEP - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    if new_run:
        os.replace(path, f"{path}.1")  # nothing writes to it any more
        return True
    try:  # the program still writes to it: copy, then empty it in place
        with open(path, "rb") as src, open(f"{path}.1", "wb") as dst:
            src.seek(max(0, size - LOG_MAX_BYTES))
            left = min(size, LOG_MAX_BYTES)
            while left > 0:
                chunk = src.read(min(COPY_CHUNK, left))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
    except OSError:  # e.g. the disk is full: emptying the log matters more than its copy
        with contextlib.suppress(OSError):
            os.unlink(f"{path}.1")
    os.truncate(path, 0)
    return True


class Process(Resource):
    """A long-running program, started as a child of the agent."""

    type_name = "Process"
    schema = {
        "command": Attr("strings", required=True),
        "env": Attr("map", check=env_names, non_empty=False),
        "workingDirectory": Attr("string", check=absolute_path),
        "user": Attr("string"),
        "stopSignal": Attr("string", check=signal_name),
        "stopTimeoutSeconds": Attr("int", check=_non_negative),
    }

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        super().__init__(context, attributes)
        self.command: list[str] = list(attributes["command"])
        self.env: dict[str, str] = dict(attributes.get("env") or {})
        self.cwd: str = attributes.get("workingDirectory") or "/"
        self.user: str | None = attributes.get("user")
        self.stop_signal = signal_number(attributes.get("stopSignal") or DEFAULT_STOP_SIGNAL) \
            or signal.SIGTERM
        self.stop_timeout = float(attributes.get("stopTimeoutSeconds", DEFAULT_STOP_TIMEOUT))
        self._child: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._started: int | None = None
        self._watch: int | None = None
        self._last_exit = ""
        self._load()

    @classmethod
    def validate(cls, attributes: Mapping[str, Any]) -> list[str]:
        errors = super().validate(attributes)
        command = attributes.get("command")
        if isinstance(command, list) and command and any("\0" in part for part in command):
            errors.append("attributes.command: arguments must not contain NUL bytes")
        return errors

    # --- the pid file -------------------------------------------------------------------

    def _pid_path(self) -> str:
        return os.path.join(self.context.state_dir, PID_FILE)

    def _load(self) -> None:
        """Take over the identity a previous agent process recorded, if it is from this boot."""
        try:
            with open(self._pid_path(), encoding="utf-8") as f:
                record = json.load(f)
            pid, started, boot = int(record["pid"]), int(record["startTime"]), record["bootId"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if boot != procfs.boot_id():
            self._remove_pid_file()  # from an earlier boot: nothing of it runs
            return
        if pid <= 1 or pid in (os.getpid(), os.getpgid(0)):
            self._remove_pid_file()  # never init's or the agent's own group to signal
            return
        self._pid, self._started = pid, started

    def _save(self) -> None:
        record = {"pid": self._pid, "startTime": self._started, "bootId": procfs.boot_id(),
                  "command": self.command}
        directory = self.program_dir()
        tmp = os.path.join(directory, PID_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._pid_path())

    def _remove_pid_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._pid_path())

    def _forget(self) -> None:
        if self._watch is not None:
            self.context.watcher.unwatch(self._watch)
            self._watch = None
        self._reap()
        self._child = None
        self._pid = self._started = None
        self._remove_pid_file()

    # --- identity -----------------------------------------------------------------------

    def _reap(self) -> None:
        """Collect the exit status of our own child, so it does not stay a zombie."""
        if self._child is not None:
            returncode = self._child.poll()
            if returncode is not None:
                self._last_exit = describe_exit(returncode)
        elif self._pid is not None:
            try:
                pid, status = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                return  # not our child (adopted): init reaps it
            if pid:
                self._last_exit = describe_exit(os.waitstatus_to_exitcode(status))

    def _leader_running(self) -> bool:
        if self._pid is None:
            return False
        if self._child is not None:
            self._reap()
            return self._child.returncode is None
        return procfs.is_running(self._pid, self._started)

    def _group_is_ours(self) -> bool:
        """Whether process group `pid` still is the one we started (not a reused number)."""
        if self._pid is None:
            return False
        other = procfs.start_time(self._pid)
        return other is None or other == self._started

    def _ensure_watched(self) -> None:
        if self._watch is None and self._pid is not None:
            self._watch = self.context.watcher.watch(self._pid, self._started,
                                                     self.context.notify)

    # --- entry points -------------------------------------------------------------------

    def monitor(self, timeout: float) -> MonitorResult:
        if self._pid is None:
            return MonitorResult.offline(self._last_exit or "not running")
        if self._leader_running():
            self._ensure_watched()
            with contextlib.suppress(OSError):  # a log problem is not the program's
                rotate_log(os.path.join(self.context.state_dir, LOG_FILE))
            adopted = "" if self._child is not None else " (adopted)"
            return MonitorResult.online(f"pid {self._pid}{adopted}")
        self._reap()
        if not self._last_exit:
            self._last_exit = f"pid {self._pid} is no longer running"
        return MonitorResult.offline(self._last_exit)

    def online(self, timeout: float) -> None:
        if self._leader_running():
            self._ensure_watched()
            return
        if self._pid is not None and self._group_is_ours():
            self._stop_group(signal.SIGKILL, 0, min(timeout, 5.0))  # leftovers of a last run
        self._forget()
        user = account(self.user) if self.user else None
        env = environment(self.env, user)
        self._check_start(user, env["PATH"], timeout)
        directory = self.program_dir()
        log_path = os.path.join(directory, LOG_FILE)
        rotate_log(log_path, new_run=True)
        with open(log_path, "ab") as log:  # appending: see the module docstring
            try:
                # A shell enters the directory and execs the command in the child: see
                # programs.py (Popen would wait, in this thread, for a chdir or exec that
                # hangs on a dead mount). The shell's exec keeps its pid, session and group.
                child = subprocess.Popen(
                    [*ENTER, self.cwd, *self.command], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, cwd="/", env=env, start_new_session=True,
                    close_fds=True, **credentials(user))
            except PermissionError as e:
                if user is not None and e.filename is None:
                    raise ActionError(f"attributes.user: cannot run as {self.user}: "
                                      "permission denied") from None
                raise ActionError(f"attributes.command: {self.command[0]}: "
                                  "permission denied") from None
            except OSError as e:
                raise ActionError(f"attributes.command: cannot start {self.command[0]}: "
                                  f"{e.strerror or e}") from None
        self._child = child
        self._pid = child.pid
        self._started = procfs.start_time(child.pid)
        self._last_exit = ""
        self._save()
        self._ensure_watched()

    def _check_start(self, user: Account | None, search_path: str, timeout: float) -> None:
        """The working directory and the command, looked at by a child as `user` (see
        fsprobe.py), so that a start that cannot work says why, naming the attribute."""
        name = self.command[0]
        found = fsprobe.check_start(self.cwd, name, search_path, timeout, f"starting {name}",
                                    user=user, owner=self)
        if found == fsprobe.CANNOT_ENTER:
            raise ActionError(f"attributes.workingDirectory: {self.cwd} is not a directory"
                              + (f" that {self.user} may enter" if self.user else ""))
        if found == fsprobe.NOT_FOUND:
            raise ActionError(f"attributes.command: {name}: not found"
                              + ("" if "/" in name else f" (PATH={search_path})"))
        if found == fsprobe.NOT_EXECUTABLE:
            raise ActionError(f"attributes.command: {name}: permission denied")
        if found != 0:
            raise ActionError(f"attributes.command: {name}: cannot be started here "
                              f"(check status {found})")

    def offline(self, timeout: float) -> None:
        if self._pid is None:
            return
        if self._group_is_ours():
            self._stop_group(self.stop_signal, min(self.stop_timeout, timeout), timeout)
        self._forget()

    def clean(self, timeout: float) -> None:
        if self._pid is None:
            return
        if self._group_is_ours():
            self._stop_group(signal.SIGKILL, 0, timeout)
        self._forget()

    def close(self) -> None:
        if self._watch is not None:
            self.context.watcher.unwatch(self._watch)
            self._watch = None

    # --- stopping -----------------------------------------------------------------------

    def _wait_group_gone(self, until: float) -> bool:
        assert self._pid is not None
        while True:
            self._reap()
            if not group_alive(self._pid):
                return True
            if time.monotonic() >= until:
                return False
            time.sleep(POLL_SECONDS)

    def _stop_group(self, first: int, grace: float, timeout: float) -> None:
        """Send `first` to the process group, SIGKILL after `grace` s; all within `timeout`."""
        if self._pid is None:
            return
        start = time.monotonic()
        self._reap()
        if not group_alive(self._pid):
            return
        try:
            os.killpg(self._pid, first)
        except ProcessLookupError:
            return
        if first != signal.SIGKILL:
            if self._wait_group_gone(start + min(grace, timeout)):
                return
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                return
        # SIGKILL cannot be ignored: give the kernel at least a moment even if time is up.
        if not self._wait_group_gone(max(start + timeout, time.monotonic() + 1.0)):
            raise ActionTimeout(f"process group {self._pid} still runs after SIGKILL")
