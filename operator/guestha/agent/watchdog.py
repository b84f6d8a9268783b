"""The guest watchdog: the last line of fencing when the agent itself cannot act.

The agent's main loop pets the device (any write) once a second. Petting stops for good
when self-fencing could not finish within its time, or when a separate checker thread
sees that the main loop has not ticked for `hang_seconds`; the device then resets the
guest (i6300esb in KubeVirt: 30 s after the last write). An agent stop disarms it with the
magic close character "V" only once the Failover groups are offline (guestha.agent.agent);
otherwise the device is closed armed, and resets the guest unless an agent opens it again.

The checker tells a hung loop from a paused guest (live migration, SIGSTOP): when the
checker itself finds a gap in its own ticks, the whole process was paused, and the pause
is not counted as the main loop's stall (`stall_start`). The time the loop was stalled
before the pause still counts: a pause does not start the count again, or a hung loop
paused now and then would never be found.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.status import WatchdogStatus

if TYPE_CHECKING:
    from typing import Callable

log = logging.getLogger(__name__)

PET_INTERVAL = 1.0


def stall_start(last_tick: float, last_check: float, now: float, pause: float) -> float:
    """When the main loop's stall began, as the checker counts it at `now`: the loop last
    ticked at `last_tick`, the checker last ran at `last_check`. A checker gap longer than
    `pause` was a pause of the whole process: it moves the start forward by the gap (the
    loop could not run either), keeping what was stalled before it."""
    gap = now - last_check
    if gap > pause:
        return min(now, last_tick + gap)
    return last_tick


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

    def keep_released(self, reason: str) -> None:
        """Instead of open(): an earlier run of this boot let the device go, so the guest
        is due to be reset. The device is not opened (opening restarts its countdown)."""
        self.stopped_reason = reason
        log.critical("watchdog %s: not opened: %s", self.device or "(none)", reason)

    def _check_loop(self) -> None:
        last = time.monotonic()
        pause = max(2.0, 8 * self._check_interval)
        while not self._closing.wait(self._check_interval):
            now = time.monotonic()
            start = stall_start(self._last_tick, last, now, pause)
            if start > self._last_tick:  # a pause: moved forward only (the loop writes it too)
                self._last_tick = start
            last = now
            stalled = now - self._last_tick
            if stalled > self.hang_seconds and not self.stopped_reason:
                self.stop_petting(f"the agent's main loop has not run for {stalled:.1f} s")

    def close(self, disarm: bool = True) -> None:
        """Stops the checker; with `disarm`, writes the magic close so no reset follows.
        Without it the device is closed armed: it resets the guest unless it is opened
        (and petted) again within its timeout."""
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

    def status(self) -> WatchdogStatus:
        return WatchdogStatus(device=self.device, armed=self.armed, pets=self.pets,
                              petting=self.armed and not self.stopped_reason,
                              stopped_reason=self.stopped_reason or None,
                              error=self.error or None, hang_seconds=self.hang_seconds)
