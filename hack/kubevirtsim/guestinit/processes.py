"""PID 1's processes: the one reaper of the guest's PID namespace, and the process table.

PID 1 inherits every orphan of its namespace, so it must reap them all, or zombies pile up;
and services must learn their main process's exit status. Both need one ``waitpid(-1)``
loop that owns every exit status (``Reaper``): nothing else in PID 1 may wait for a child
(``subprocess`` included: a spawned ``Popen`` is told it is done already). A status that
arrives before its ``Child`` is registered is kept (bounded) for it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from kubevirtsim.guestinit.env import console


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
