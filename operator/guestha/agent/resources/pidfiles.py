"""Whether a pid that a pid file (or a command line) names is the application's, and so
whether the agent, running as root, may signal it.

A pid file is written by the application, often as an unprivileged user: whatever pid
that user writes there, the agent would SIGKILL as root at clean. So a pid is the
application's only when it is not init (1) and not the agent itself, when its process
runs as the application's user (as root only when the application runs as root), and
when it started before its pid file was last written (a process that started after
that is another one that was given a reused pid). One exception: an application that
runs as root whose pid file is root's own (only root could have written it) may name a
process that runs as another user (a daemon that dropped its privileges). judge() is
that rule, pure.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

from . import procfs

OURS = "ours"  # the application's: it counts as running, clean may kill it
GONE = "gone"  # not running (or the pid was reused since): it counts as not running
WRONG = "wrong"  # a process that is not the application's: never signalled, in doubt

STARTED_SLACK_SECONDS = 1.0  # start times and modification times are not exact


@dataclass(frozen=True)
class Seen:
    """What /proc says of the process with the pid (running False: no such process)."""

    running: bool
    uids: tuple[int, int] | None = None  # real, effective
    started: float | None = None  # wall-clock seconds
    ticks: int | None = None  # the start time as /proc has it: the process's identity


def judge(pid: int, seen: Seen, expected_uid: int, agent_pid: int,
          written: float | None = None, writer: int | None = None) -> tuple[str, str]:
    """(OURS, GONE or WRONG, why) for `pid` from a pid file last written at `written`
    (wall-clock seconds) by uid `writer` (its owner); both None for a process found by
    its command line. `expected_uid` is the uid the application runs as."""
    if pid <= 1:
        return WRONG, f"pid {pid} is {'init' if pid == 1 else 'not a process'}"
    if pid == agent_pid:
        return WRONG, f"pid {pid} is the agent itself"
    if not seen.running:
        return GONE, f"pid {pid} is not running"
    if written is not None and seen.started is not None \
            and seen.started > written + STARTED_SLACK_SECONDS:
        return GONE, (f"pid {pid} started after the pid file was written: another process "
                      f"that was given the same pid")
    trusted = expected_uid == 0 and writer == 0  # root's file for a root application
    if seen.uids is None or (not trusted and any(uid != expected_uid for uid in seen.uids)):
        runs_as = "an unknown user" if seen.uids is None else f"uid {seen.uids[1]}"
        return WRONG, (f"pid {pid} runs as {runs_as}, not as the application's user "
                       f"(uid {expected_uid})")
    return OURS, f"pid {pid}"


def look(pid: int) -> Seen:
    """What /proc says of `pid` now."""
    if pid <= 0 or not procfs.is_running(pid):
        return Seen(False)
    return Seen(True, procfs.uids(pid), procfs.started_at(pid), procfs.start_time(pid))


def kill(pid: int, seen: Seen) -> None:
    """SIGKILL `pid` if it still is the process `seen` described (same start time; through
    a pidfd where there is one, so a pid reused meanwhile is not hit); else nothing."""
    if pid <= 1 or pid == os.getpid() or seen.ticks is None:
        return
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is None or send is None:
        if procfs.start_time(pid) == seen.ticks:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return
    try:
        fd = pidfd_open(pid)
    except OSError:
        return  # gone
    try:
        if procfs.start_time(pid) == seen.ticks:  # the pidfd holds this very process
            with contextlib.suppress(OSError):
                send(fd, signal.SIGKILL)
    finally:
        os.close(fd)
