"""The simulator's guests as tests break them and watch them from outside: find a
guest host by its VMI's uid, crash it (SIGKILL of its PID 1: the kernel kills the rest,
as a power loss does), freeze it (SIGSTOP of every process in its PID namespace, as a
hung guest), thaw it, and count the live copies of a program across all guests.

Outside observers: nothing here asks the operator or an agent anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def guest_record(state_dir: Path, uid: str) -> dict[str, object]:
    for path in state_dir.glob("guests/*/guest.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("uid") == uid:
            return dict(record)
    raise LookupError(f"no guest host for VMI uid {uid} under {state_dir}")


def guest_processes(state_dir: Path, uid: str) -> list[int]:
    """Host pids of every process of the guest (its PID namespace)."""
    init = int(str(guest_record(state_dir, uid)["init_pid"]))
    namespace = os.readlink(f"/proc/{init}/ns/pid")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns/pid") == namespace:
                    pids.append(int(entry.name))
    return pids


def crash(state_dir: Path, uid: str) -> None:
    os.kill(int(str(guest_record(state_dir, uid)["init_pid"])), signal.SIGKILL)


def freeze(state_dir: Path, uid: str) -> list[int]:
    """SIGSTOP every process of the guest; returns them (for thaw)."""
    pids = guest_processes(state_dir, uid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def copies(marker: bytes) -> list[int]:
    """Pids of live processes (not zombies) whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class CopyCounter:
    """Counts the live copies of a program every `interval` seconds in a thread of its
    own, from /proc, and keeps every instant with more than one (safety rule 1), and when
    each copy (pid) was first and last seen alive (time.time()), so a test can tell that
    one copy was gone before the next one started."""

    marker: bytes
    interval: float = 0.02
    samples: int = 0
    doubles: list[tuple[float, list[int]]] = field(default_factory=list)
    seen: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> first, last
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CopyCounter:
        self._thread = threading.Thread(target=self._run, name="copy-counter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            pids = copies(self.marker)
            at = time.time()
            for pid in pids:
                self.seen[pid] = (self.seen.get(pid, (at, at))[0], at)
            self.samples += 1
            if len(pids) > 1:
                self.doubles.append((time.time(), pids))

    def pids_since(self, since: float) -> list[int]:
        """The copies first seen alive at or after `since`, oldest first."""
        return sorted((p for p, (first, _) in list(self.seen.items()) if first >= since),
                      key=lambda p: self.seen[p][0])

    def check(self) -> None:
        assert self.samples > 0, "the copy counter never sampled"
        assert not self.doubles, (f"two live copies of {self.marker!r} at "
                                  f"{len(self.doubles)} of {self.samples} instants; first: "
                                  f"{self.doubles[0]}")
