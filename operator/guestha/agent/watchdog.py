"""The guest watchdog: the last line of fencing when the agent itself cannot act.

The agent's main loop pets the device (any write) once a second. Petting stops for good
when self-fencing could not finish within its time, or when a separate checker thread
sees that the main loop has not ticked for `hang_seconds`; the device then resets the
guest (i6300esb in KubeVirt: 30 s after the last write). A clean agent stop disarms it
with the magic close character "V" first, so stopping the service does not reset the guest.

The checker tells a hung loop from a paused guest (live migration, SIGSTOP): when the
checker itself finds a gap in its own ticks, the whole process was paused, and the main
loop gets a fresh `hang_seconds` to tick again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

PET_INTERVAL = 1.0


class Watchdog:
    """Pets a watchdog device (or a stand-in file) while the agent is healthy."""

    def __init__(self, device: str | None, on_stop: Callable[[str], None],
                 hang_seconds: float = 10.0, check_interval: float = 0.25) -> None:
        self.device = device
        self.hang_seconds = hang_seconds
        self._check_interval = check_interval
        self._on_stop = on_stop
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.stopped_reason = ""
        self.error = ""  # the device could not be opened
        self.pets = 0
        self._last_pet = -PET_INTERVAL
        self._last_tick = time.monotonic()
        self._closing = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, name="watchdog-checker",
                                         daemon=True)

    def open(self) -> None:
        """Opens the device (arming it) and starts the checker.

        A device that cannot be opened is reported (`error`, and False is returned) but
        does not stop the agent: an agent without its watchdog still monitors and
        self-fences, which is better than no agent at all.
        """
        if self.device:
            try:
                self._fd = os.open(self.device, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                self.error = f"cannot open {self.device}: {e.strerror or e}"
                log.error("watchdog: %s; running without it", self.error)
            else:
                self.pet(time.monotonic(), force=True)
        self._last_tick = time.monotonic()
        self._checker.start()

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def tick(self, now: float) -> None:
        """The main loop is alive; pets the device when a second has passed."""
        self._last_tick = now
        self.pet(now)

    def pet(self, now: float, force: bool = False) -> None:
        with self._lock:
            if self._fd is None or self.stopped_reason:
                return
            if not force and now - self._last_pet < PET_INTERVAL:
                return
            try:
                os.write(self._fd, b"\0")
                self._last_pet = now
                self.pets += 1
            except OSError as e:
                log.error("watchdog %s: write failed: %s", self.device, e)

    def stop_petting(self, reason: str) -> None:
        """Never pet again: the guest will be reset by the device."""
        with self._lock:
            if self.stopped_reason:
                return
            self.stopped_reason = reason
        log.critical("watchdog %s: no longer petted: %s", self.device or "(none)", reason)
        self._on_stop(reason)

    def _check_loop(self) -> None:
        last = time.monotonic()
        while not self._closing.wait(self._check_interval):
            now = time.monotonic()
            if now - last > max(2.0, 8 * self._check_interval):
                # This thread did not run either: the process or guest was paused.
                self._last_tick = max(self._last_tick, now)
            last = now
            stalled = now - self._last_tick
            if stalled > self.hang_seconds and not self.stopped_reason:
                self.stop_petting(f"the agent's main loop has not run for {stalled:.1f} s")

    def close(self, disarm: bool = True) -> None:
        """Stops the checker; with `disarm`, writes the magic close so no reset follows."""
        self._closing.set()
        if self._checker.is_alive():
            self._checker.join(2.0)
        with self._lock:
            if self._fd is None:
                return
            try:
                if disarm and not self.stopped_reason:
                    os.write(self._fd, b"V")
            except OSError as e:
                log.error("watchdog %s: magic close failed: %s", self.device, e)
            finally:
                os.close(self._fd)
                self._fd = None

    def status(self) -> dict[str, Any]:
        return {"device": self.device, "armed": self.armed, "pets": self.pets,
                "petting": self.armed and not self.stopped_reason,
                "stoppedReason": self.stopped_reason or None, "error": self.error or None,
                "hangSeconds": self.hang_seconds}
