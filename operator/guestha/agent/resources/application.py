"""Application: an application driven by its own programs (VCS Application agent).

startProgram and stopProgram are shell command lines that start and stop the application
and return. Its state comes from monitorProgram's exit status (VCS: 110 online, 100
offline; OCF style: 0 online, 7 offline; anything else: failed, Unknown), or, without
one, from pidFiles (every recorded process runs) and monitorProcesses (every listed
command line runs); some running and some not is a failure (Unknown), not Offline. clean runs
cleanProgram and then kills whatever pidFiles and monitorProcesses still find, but only
processes that are the application's (pidfiles.py: its user's, started before its pid
file was written, never init or the agent): a pid file names what its writer wants.
Pid files are read by a child process (fsprobe.py), as they may be on a dead mount.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.states import OFFLINE, ONLINE

from . import fsprobe, pidfiles, procfs
from .base import (
    ActionError,
    ActionTimeout,
    Attr,
    MonitorResult,
    Resource,
    ResourceContext,
    absolute_path,
    env_names,
)
from .programs import Account, Completed, account, environment, shell

if TYPE_CHECKING:
    from typing import Any

VCS_ONLINE, VCS_OFFLINE = 110, 100
OCF_ONLINE, OCF_OFFLINE = 0, 7


def _absolute_paths(value: Any) -> str | None:
    bad = [p for p in value if not p.startswith("/")]
    return f"must be absolute paths: {', '.join(map(repr, bad))}" if bad else None


def _no_empty(value: Any) -> str | None:
    return "entries must not be empty" if any(not v.strip() for v in value) else None


def monitor_status(returncode: int) -> str | None:
    """Online/Offline for a monitorProgram exit status, None for one that means neither."""
    if returncode in (VCS_ONLINE, OCF_ONLINE):
        return ONLINE
    if returncode in (VCS_OFFLINE, OCF_OFFLINE):
        return OFFLINE
    return None


class Application(Resource):
    """An application with start, stop, clean and monitor programs."""

    type_name = "Application"
    schema = {
        "startProgram": Attr("string", required=True),
        "stopProgram": Attr("string", required=True),
        "cleanProgram": Attr("string"),
        "monitorProgram": Attr("string"),
        "pidFiles": Attr("strings", check=_absolute_paths),
        "monitorProcesses": Attr("strings", check=_no_empty),
        "env": Attr("map", check=env_names, non_empty=False),
        "workingDirectory": Attr("string", check=absolute_path),
        "user": Attr("string"),
    }

    def __init__(self, context: ResourceContext, attributes: Mapping[str, Any]) -> None:
        super().__init__(context, attributes)
        self.start_program: str = attributes["startProgram"]
        self.stop_program: str = attributes["stopProgram"]
        self.clean_program: str | None = attributes.get("cleanProgram")
        self.monitor_program: str | None = attributes.get("monitorProgram")
        self.pid_files: list[str] = list(attributes.get("pidFiles") or [])
        self.monitor_processes: list[str] = list(attributes.get("monitorProcesses") or [])
        self.env: dict[str, str] = dict(attributes.get("env") or {})
        self.cwd: str = attributes.get("workingDirectory") or "/"
        self.user: str | None = attributes.get("user")

    @classmethod
    def validate(cls, attributes: Mapping[str, Any]) -> list[str]:
        errors = super().validate(attributes)
        if not any(attributes.get(k) for k in ("monitorProgram", "pidFiles",
                                                "monitorProcesses")):
            errors.append("attributes.monitorProgram: an Application needs monitorProgram, "
                          "pidFiles or monitorProcesses to know whether it runs")
        return errors

    def _run(self, program: str, what: str, timeout: float) -> Completed:
        # The working directory is entered in the child (programs.entering), never looked
        # at by the agent itself: it may be on a dead mount.
        user: Account | None = account(self.user) if self.user else None
        return shell(program, timeout, f"attributes.{what}", env=environment(self.env, user),
                     cwd=self.cwd, user=user, owner=self)

    def _must_succeed(self, program: str, what: str, timeout: float) -> None:
        done = self._run(program, what, timeout)
        if done.returncode != 0:
            raise ActionError(f"{what} exited with status {done.returncode}: {done.tail()}")

    def online(self, timeout: float) -> None:
        self._must_succeed(self.start_program, "startProgram", timeout)

    def offline(self, timeout: float) -> None:
        self._must_succeed(self.stop_program, "stopProgram", timeout)

    def monitor(self, timeout: float) -> MonitorResult:
        if self.monitor_program:
            done = self._run(self.monitor_program, "monitorProgram", timeout)
            state = monitor_status(done.returncode)
            if state == ONLINE:
                return MonitorResult.online(done.tail(200))
            if state == OFFLINE:
                return MonitorResult.offline(done.tail(200))
            return MonitorResult.unknown(
                f"monitorProgram exited with status {done.returncode} (110 or 0: online, "
                f"100 or 7: offline): {done.tail(200)}")
        found = self._processes(timeout)
        if found.wrong:  # a pid file names a process that is not the application's
            return MonitorResult.unknown("; ".join(found.wrong + found.missing))
        if not found.missing:
            return MonitorResult.online(f"pids {', '.join(map(str, sorted(found.ours)))}")
        text = "; ".join(found.missing)
        if found.ours:  # some of it still runs: failed, not stopped
            return MonitorResult.unknown(f"partly running: {text}")
        return MonitorResult.offline(text)

    def _expected_uid(self) -> int:
        """The uid the application's processes run as: its user's, else the agent's."""
        return account(self.user).uid if self.user else os.geteuid()

    def _processes(self, timeout: float) -> _Found:
        """The application's processes that run, what is expected but does not run, and
        pids that name processes which are not the application's (see pidfiles.py)."""
        found = _Found()
        expected, agent = self._expected_uid(), os.getpid()
        if self.pid_files:
            # Read by a child: a pid file may be on a dead mount (fsprobe.py).
            for facts in fsprobe.look(self.pid_files, timeout, "attributes.pidFiles",
                                      read=True, owner=self):
                try:
                    pid = int((facts.content or "").split()[0])
                except (ValueError, IndexError):
                    found.missing.append(f"no pid in {facts.path}"
                                         + (f" ({facts.error})" if facts.error else ""))
                    continue
                seen = pidfiles.look(pid)
                verdict, why = pidfiles.judge(pid, seen, expected, agent, facts.mtime,
                                              facts.uid)
                if verdict == pidfiles.OURS:
                    found.ours[pid] = seen
                elif verdict == pidfiles.GONE:
                    found.missing.append(f"{why} (from {facts.path})")
                else:
                    found.wrong.append(f"{facts.path} names a process that is not the "
                                       f"application's: {why}")
        if self.monitor_processes:
            lines = list(procfs.command_lines())
            for wanted in self.monitor_processes:
                mine = {}
                for pid, line in lines:
                    if line.strip() != wanted.strip():
                        continue
                    seen = pidfiles.look(pid)
                    if pidfiles.judge(pid, seen, expected, agent)[0] == pidfiles.OURS:
                        mine[pid] = seen  # others' processes of that name are not counted
                if mine:
                    found.ours.update(mine)
                else:
                    found.missing.append(f"no process {wanted!r} of the application's user")
        return found

    def clean(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        failure = ""
        if self.clean_program:
            done = self._run(self.clean_program, "cleanProgram", timeout)
            if done.returncode != 0:
                failure = f"cleanProgram exited with status {done.returncode}: {done.tail()}"
        if self.pid_files or self.monitor_processes:
            found = self._processes(max(deadline - time.monotonic(), 1.0))
            for pid, seen in found.ours.items():  # only the application's own
                pidfiles.kill(pid, seen)
            while any(procfs.is_running(pid, seen.ticks) for pid, seen in found.ours.items()):
                if time.monotonic() >= deadline:
                    raise ActionTimeout(f"processes {sorted(found.ours)} survive SIGKILL")
                time.sleep(0.02)
            if found.wrong:
                raise ActionError("; ".join(found.wrong) + " (not signalled)")
            return
        if failure:
            raise ActionError(failure)


@dataclass
class _Found:
    ours: dict[int, pidfiles.Seen] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
