"""One thread that notices at once when watched processes end.

A process death must reach the operator in milliseconds, not at the next monitor. Each
watched process gets a pidfd (Linux 5.3+, os.pidfd_open in Python 3.9+), which becomes
readable when the process exits, whether or not the agent is its parent (so a process
adopted after an agent restart is watched the same way). One poll() over all pidfds plus a
wake-up pipe serves every resource. Without pidfds (old kernels) the thread checks /proc
every 100 ms instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass

from . import procfs

FALLBACK_POLL_SECONDS = 0.1
IDLE_WAKE_SECONDS = 5.0  # the thread looks at its watches at least this often


@dataclass
class _Watch:
    pid: int
    started: int | None
    callback: Callable[[], None]
    fd: int | None  # the pidfd, or None when /proc is polled instead


class ExitWatcher:
    """Calls a callback (in its own thread) when a watched process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._closing: list[int] = []  # pidfds the poll thread closes when it next wakes
        self._tokens = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, pid: int, started: int | None, callback: Callable[[], None]) -> int:
        """Watch `pid` (that started at `started`, if given); returns a token for unwatch.

        If the process is already gone, the callback runs soon after.
        """
        fd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                fd = pidfd_open(pid)
            except ProcessLookupError:
                fd = None  # already gone: the /proc check below reports it
            except OSError:
                fd = None  # no pidfd support: poll /proc
        # The pidfd names whatever process had `pid` when it was opened: check that it is
        # still the one we mean (pids are reused).
        if fd is not None and started is not None and procfs.start_time(pid) != started:
            os.close(fd)
            fd = None
        with self._lock:
            token = next(self._tokens)
            self._watches[token] = _Watch(pid, started, callback, fd)
        self._wake()
        return token

    def unwatch(self, token: int) -> None:
        with self._lock:
            watch = self._watches.pop(token, None)
        if watch is not None and watch.fd is not None:
            # The poll thread may be polling the fd: it closes it itself when it wakes.
            with self._lock:
                self._closing.append(watch.fd)
            self._wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake()
        self._thread.join(timeout=2)
        with self._lock:
            fds = [w.fd for w in self._watches.values() if w.fd is not None] + self._closing
            self._watches.clear()
            self._closing = []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                for fd in self._closing:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._closing = []
                watches = dict(self._watches)
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            by_fd: dict[int, int] = {}
            polled: list[int] = []
            for token, watch in watches.items():
                if watch.fd is not None:
                    poller.register(watch.fd, select.POLLIN)
                    by_fd[watch.fd] = token
                else:
                    polled.append(token)
            # Anything without a pidfd is checked right away and then every 100 ms.
            ended = [t for t in polled if not procfs.is_running(watches[t].pid,
                                                                watches[t].started)]
            timeout_ms = int((FALLBACK_POLL_SECONDS if polled else IDLE_WAKE_SECONDS) * 1000)
            if not ended:
                for fd, _ in poller.poll(timeout_ms):
                    if fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                    elif fd in by_fd:
                        ended.append(by_fd[fd])
            for token in ended:
                with self._lock:
                    ended_watch = self._watches.pop(token, None)
                    if ended_watch is not None and ended_watch.fd is not None:
                        self._closing.append(ended_watch.fd)
                if ended_watch is not None:
                    with contextlib.suppress(Exception):  # a callback must not stop the watcher
                        ended_watch.callback()
