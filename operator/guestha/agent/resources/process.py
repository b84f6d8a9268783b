"""Process: a program the agent starts and keeps as its own child (VCS Process agent).

The agent starts the command in a new session, so the program and everything it forks form
one process group that offline and clean stop together. Its death is seen at once: the
exit watcher's pidfd becomes readable the moment it exits and asks for an immediate
monitor. The pid, the start time from /proc/PID/stat and the boot id are written to the
resource's directory, so a new agent process (after an agent restart) adopts a program
still running instead of starting a second copy, and watches it by pidfd as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from . import procfs
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
from .programs import account, credentials, environment

DEFAULT_STOP_SIGNAL = "SIGTERM"
DEFAULT_STOP_TIMEOUT = 10
PID_FILE = "process.json"
LOG_FILE = "output.log"
POLL_SECONDS = 0.02


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
        if not os.path.isdir(self.cwd):
            raise ActionError(f"attributes.workingDirectory: {self.cwd} is not a directory")
        directory = self.program_dir()
        log_path = os.path.join(directory, LOG_FILE)
        if os.path.exists(log_path):
            os.replace(log_path, log_path + ".1")
        with open(log_path, "ab") as log:
            try:
                child = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.cwd, env=environment(self.env, user), start_new_session=True,
                    close_fds=True, **credentials(user))
            except FileNotFoundError:
                raise ActionError(f"attributes.command: {self.command[0]}: not found "
                                  f"(PATH={environment(self.env, user)['PATH']})") from None
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
