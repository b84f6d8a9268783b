"""What every part of a guest's PID 1 shares: the environment its programs start with, its
console, its clock stamps, and its way of serving a socket.

Services, cloud-init's commands and qemu-guest-agent's guest-exec all start programs with
the environment a systemd guest gives them (``guest_env``), resolve commands in the guest's
PATH, and log to the guest's console; one copy of each, here.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIME = time.monotonic()  # PID 1 imports this module first thing: the guest's boot


def now_iso() -> str:
    """A log line's time stamp, as cloud-init writes them (UTC, milliseconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def uptime() -> float:
    return time.monotonic() - BOOT_TIME


def console(message: str) -> None:
    """A line on the guest's console (GUEST_DIR/console.log on the host)."""
    sys.stdout.write(f"[{uptime():9.3f}] {message}\n")
    sys.stdout.flush()


def guest_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a program PID 1 starts, with `extra` on top."""
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


def resolve_executable(word: str) -> str:
    """An absolute path as it is, a bare name found in the guest's PATH."""
    if word.startswith("/"):
        return word
    found = shutil.which(word, path=GUEST_PATH)
    if found is None:
        raise FileNotFoundError(2, f"executable {word!r} not found in {GUEST_PATH}")
    return found


def serve_each(listener: socket.socket, serve: Callable[[socket.socket], None], name: str) -> None:
    """Accept connections on `listener` in a daemon thread called `name`, each served by
    `serve` in a daemon thread of its own, until the listener is shut down or closed."""

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except ConnectionAbortedError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, name=name, daemon=True).start()
