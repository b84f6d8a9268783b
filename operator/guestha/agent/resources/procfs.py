"""Facts about processes read from /proc: identity (pid + start time + boot), command lines.

A pid alone does not name a process for long: pids are reused. The start time (field 22
of /proc/PID/stat, in clock ticks since boot) together with the boot id does, which is
what lets a restarted agent adopt a process it started before.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

PROC = "/proc"


def boot_id() -> str:
    """This boot's id (changes at every boot)."""
    try:
        with open(f"{PROC}/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (field 3 is index 0), or None if gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain ") ".
    return raw[raw.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot, or None if it does not exist."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22


def process_group(pid: int) -> int | None:
    """The process group id of a process, or None if it does not exist."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 3:
        return None
    return int(fields[2])  # field 5


def is_running(pid: int, started: int | None = None) -> bool:
    """Whether `pid` exists, is not a zombie, and (if given) started at `started`."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return False
    return started is None or int(fields[19]) == started


def uids(pid: int) -> tuple[int, int] | None:
    """(real, effective) uid of a process, or None if it does not exist."""
    try:
        with open(f"{PROC}/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    fields = line.split()
                    return int(fields[1]), int(fields[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def started_at(pid: int) -> float | None:
    """When a process started, in wall-clock seconds (its start time after boot, placed
    on the wall clock through CLOCK_BOOTTIME), or None if it does not exist."""
    ticks = start_time(pid)
    if ticks is None:
        return None
    since = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - since


def all_pids() -> list[int]:
    """The pids of every process visible in /proc."""
    try:
        return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]
    except OSError:
        return []


def cmdline(pid: int) -> str | None:
    """The command line of a process with arguments joined by spaces (None: gone or kernel)."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None
    return " ".join(part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0"))


def command_lines() -> Iterator[tuple[int, str]]:
    """(pid, command line) of every running user-space process."""
    for pid in all_pids():
        line = cmdline(pid)
        if line is not None and is_running(pid):
            yield pid, line


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def pids_using(top: str) -> list[int]:
    """Processes whose cwd, root, executable, open files or mappings lie under `top`.

    The part of fuser(1) that a Mount clean needs, without depending on psmisc.
    """
    found: list[int] = []
    own = os.getpid()
    for pid in all_pids():
        if pid in (own, 1):  # never the agent itself, never init
            continue
        base = f"{PROC}/{pid}"
        links = [f"{base}/cwd", f"{base}/root", f"{base}/exe"]
        with contextlib.suppress(OSError):
            links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
        hit = False
        for link in links:
            try:
                if _under(os.readlink(link), top):
                    hit = True
                    break
            except OSError:
                continue
        if not hit:
            try:
                with open(f"{base}/maps", encoding="utf-8", errors="replace") as f:
                    hit = any(_under(line.split(None, 5)[-1].strip(), top)
                              for line in f if line.count(" ") >= 5 and "/" in line)
            except OSError:
                pass
        if hit and top != "/":
            found.append(pid)
    return found
