"""One resource's life in the agent: its thread, its entry points, and the clock.

Each resource gets a thread that runs its entry points one at a time (as VCS agents do):
commands from the group runner (probe, online, offline, clear) and monitors, on the
interval the rules choose (MonitorInterval, OfflineMonitorInterval), or at once when the
resource itself reports a change (a Process's exit).

What a result means, and so what the thread does next, is decided by the pure functions
of agent/verdicts.py (ToleranceLimit, FaultOnMonitorTimeouts, RestartLimit within
ConfInterval, OnlineWaitLimit, when a fault is declared, the intervals): this module only
carries their verdicts out, reads the clock for them, and keeps their counters (a
verdicts.Seen) between calls. How it carries them out is its own contract:
- a fault is pushed (ResourceFaulted) the moment it is decided, before clean runs; the
  resource is Faulted only once clean has stopped it, confirmed by a monitor, so Faulted
  means "not running"; a clean that fails leaves it Unknown (it may still run);
- a restart in place is announced (ResourceRestarted) before its clean, then online;
- a resource in doubt is stopped (clean, confirmed) before it is started;
- a fault outlives the agent's restart: the faulted mark is kept on disk (store.FaultRecord)
  whenever it changes, and a monitor that finds a record starts Unknown with the mark set,
  so its probe makes it Faulted again if it is stopped (Online if it runs) until cleared.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.config import ResourceConfig
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, STARTING, STOPPING, UNKNOWN

from .events import rfc3339
from .resources import ActionAborted, ActionError, ActionTimeout, MonitorResult, Resource
from .store import FaultRecord
from .verdicts import (
    FAULT,
    NOTE,
    RESTART,
    SET,
    TOLERATE,
    Limits,
    Seen,
    after_clean,
    came_online,
    cleared,
    confirm_online,
    judge,
    moved,
    next_monitor,
    online_failed,
    stopped_counters,
)

if TYPE_CHECKING:
    from typing import Any

    Emit = Callable[[str, dict[str, Any]], None]
    Make = Callable[[ResourceConfig, Callable[[], None]], Resource]

OFFLINE_POLL_SECONDS = 0.2  # pause between monitors while confirming an offline action
IDLE_WAKE_SECONDS = 5.0  # an idle resource thread looks at its queue at least this often
COMMAND_MARGIN_SECONDS = 5  # added to the sum of a resource's timeouts (command_bound)
# What an entry point may raise when it fails (an OSError is a failure of the action too).
ACTION_FAILURES = (ActionError, OSError)

log = logging.getLogger(__name__)


class Pending:
    """The outcome of a command that a resource's thread runs; wait() for it.

    `bound` is the longest the command may take, queue included (seconds): waiting longer
    than that means something is wrong, and a waiter gives up rather than hang with it.
    """

    def __init__(self, bound: float = 0.0) -> None:
        self._event = threading.Event()
        self.ok = False
        self.state = ""
        self.message = ""
        self.bound = bound
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def finish(self, ok: bool, state: str, message: str) -> None:
        self.ok, self.state, self.message = ok, state, message
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """True when the command finished within `timeout` seconds."""
        return self._event.wait(max(timeout, 0.0))


@dataclass
class _Command:
    kind: str  # probe, online, offline, clear, replace
    pending: Pending = field(default_factory=Pending)
    reason: str = ""
    note: str = ""  # a message for the state changes this command makes
    deadline: float | None = None  # monotonic; offline under self-fencing has one


class ResourceMonitor:
    """Runs one resource: its thread, its state, its counters."""

    def __init__(self, group: str, config: ResourceConfig, make: Make, emit: Emit,
                 on_change: Callable[[ResourceMonitor], None],
                 fault_record: FaultRecord | None = None) -> None:
        self.group = group
        self.config = config
        self._make = make
        self._emit = emit
        self._on_change = on_change
        self.resource = make(config, self.trigger)
        self._active = (config.type, dict(config.attributes))
        self._data = threading.Lock()
        # The state and the rules' counters: replaced whole (under _data) by the thread only.
        self._seen = Seen(UNKNOWN)
        self.message = "not probed yet"
        # The faulted mark on disk (None: not kept), and whether a record is there now.
        self._fault_record = fault_record
        recorded = fault_record.load() if fault_record is not None else None
        self._fault_recorded = recorded is not None
        if recorded is not None:
            self._seen = Seen(UNKNOWN, faulted=True)
            self.message = f"not probed yet; faulted before the agent restarted: {recorded}"
        self.last_change = time.time()
        self._cond = threading.Condition()
        self._queue: collections.deque[_Command] = collections.deque()
        self._triggered = False
        self._next_monitor: float | None = None
        self._closed = False
        self._aborting = False
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"resource-{group}/{config.name}")
        self._thread.start()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> str:
        return self._seen.state


    # --- what other threads call ------------------------------------------------------

    def command_bound(self) -> float:
        """The longest one command may take with this resource's timeouts (seconds): its
        monitors, its action, the wait for a monitor to confirm it, and a clean after it."""
        config = self.config
        monitor, timeouts = config.monitor, config.timeouts
        confirm = config.online_wait_limit * monitor.interval_seconds
        return float(4 * monitor.timeout_seconds + timeouts.online_seconds + confirm
                     + 2 * timeouts.offline_seconds + timeouts.clean_seconds
                     + COMMAND_MARGIN_SECONDS)

    def _submit(self, command: _Command) -> Pending:
        with self._cond:
            closed = self._closed
            if not closed:
                # Queued behind the command running now and those queued before it.
                command.pending.bound = self.command_bound() * (len(self._queue) + 2)
                self._queue.append(command)
                self._cond.notify_all()
        if closed:  # finished (its callbacks run) with no lock held
            command.pending.finish(False, self.state, "the agent is shutting down")
        return command.pending

    def probe(self) -> Pending:
        return self._submit(_Command("probe"))

    def online(self, reason: str = "Online") -> Pending:
        with self._cond:
            self._aborting = False
        return self._submit(_Command("online", reason=reason))

    def offline(self, reason: str = "Offline", deadline: float | None = None,
                note: str = "") -> Pending:
        return self._submit(_Command("offline", reason=reason, deadline=deadline, note=note))

    def clear(self) -> Pending:
        return self._submit(_Command("clear"))

    def update(self, config: ResourceConfig) -> None:
        """New settings: policy applies now; new type/attributes at the next online (or at
        once while the resource is offline or faulted)."""
        with self._data:
            self.config = config
        if self.pending_change:
            self._submit(_Command("replace"))
        self._changed()

    @property
    def pending_change(self) -> bool:
        return (self.config.type, dict(self.config.attributes)) != self._active

    def trigger(self) -> None:
        """Monitor as soon as possible (called by the resource when it sees a change)."""
        with self._cond:
            self._triggered = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Stop what runs now (online programs are killed), drop queued onlines, and restart
        nothing by itself until the next online command."""
        with self._cond:
            self._aborting = True
            dropped = [c for c in self._queue if c.kind == "online"]
            for command in dropped:
                self._queue.remove(command)
            self._cond.notify_all()
        for command in dropped:
            command.pending.finish(False, self.state, "aborted")
        self.resource.abort()

    def close(self, wait: float = 2.0) -> None:
        """Stop the thread (after the entry point running now); the resource keeps running."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for command in queued:
            command.pending.finish(False, self.state, "the agent is shutting down")
        self._thread.join(wait)
        self.resource.close()

    def snapshot(self) -> dict[str, Any]:
        with self._data:
            return {
                "name": self.config.name,
                "type": self.config.type,
                "state": self.state,
                "critical": self.config.critical,
                "restarts": self._seen.restarts,
                "monitorTimeouts": self._seen.timeouts,
                "message": self.message,
                "lastChange": rfc3339(self.last_change),
                "pendingChange": self.pending_change,
            }

    # --- the thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            command: _Command | None = None
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._queue:
                        command = self._queue.popleft()
                        break
                    now = time.monotonic()
                    if self._triggered or (self._next_monitor is not None
                                           and now >= self._next_monitor):
                        self._triggered = False
                        break
                    wait = IDLE_WAKE_SECONDS if self._next_monitor is None else \
                        min(self._next_monitor - now, IDLE_WAKE_SECONDS)
                    self._cond.wait(wait)
            try:
                if command is None:
                    self._handle(*self._monitor())
                else:
                    self._run(command)
            except Exception as e:  # a bug in one resource type must not end monitoring
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                self._set(UNKNOWN, "InternalError", f"agent error: {detail}")
                if command is not None and not command.pending.done:
                    command.pending.finish(False, self.state, self.message)
            self._schedule()

    def _schedule(self) -> None:
        interval = next_monitor(self.state, Limits.of(self.config))
        with self._cond:
            self._next_monitor = None if interval is None else time.monotonic() + interval

    def _pause(self, seconds: float) -> bool:
        """Sleep unless closed or aborted; False if interrupted."""
        with self._cond:
            return not self._cond.wait_for(lambda: self._closed or self._aborting,
                                           max(seconds, 0))

    def _set(self, state: str, reason: str, message: str,
             seen: Seen | None = None) -> None:
        """Move to `state` with the rules' counters `seen` (the current ones by default),
        and report a change of state (with no lock held)."""
        base = self._seen if seen is None else seen
        with self._data:
            previous = self._seen.state
            self._seen = moved(base, state)
            self.message = message
            if state != previous:
                self.last_change = time.time()
        self._record_fault()
        if state != previous:
            self._emit("ResourceState", {"group": self.group, "resource": self.name,
                                         "state": state, "previous": previous,
                                         "reason": reason, "message": message})
            self._changed()

    def _keep(self, seen: Seen, message: str | None = None) -> None:
        """New counters (and message), the same state."""
        with self._data:
            self._seen = replace(seen, state=self._seen.state)
            if message is not None:
                self.message = message
        self._record_fault()

    def _record_fault(self) -> None:
        """Keeps the faulted mark on disk as it is in memory (the thread only, no lock
        held). A record that cannot be written or removed is logged and tried again at
        the next change; memory stays the authority while the agent runs."""
        faulted = self._seen.faulted
        if self._fault_record is None or faulted == self._fault_recorded:
            return
        try:
            if faulted:
                self._fault_record.save(self.message, rfc3339(time.time()))
            else:
                self._fault_record.drop()
        except OSError as e:
            log.warning("%s/%s: the fault could not be %s on disk: %s", self.group,
                        self.name, "recorded" if faulted else "forgotten", e)
            return
        self._fault_recorded = faulted

    def _changed(self) -> None:
        self._on_change(self)

    def _monitor(self) -> tuple[MonitorResult, bool]:
        """One monitor: (result, timed out). A monitor that abort() cut short (self-fencing
        does not wait for a monitor that hangs) gave no answer, as one that timed out."""
        timeout = float(self.config.monitor.timeout_seconds)
        start = time.monotonic()
        try:
            result = self.resource.monitor(timeout)
        except (ActionTimeout, ActionAborted) as e:
            return MonitorResult.unknown(str(e)), True
        except ACTION_FAILURES as e:
            return MonitorResult.unknown(str(e)), False
        if time.monotonic() - start > timeout:
            return MonitorResult.unknown(f"monitor took longer than {timeout:g} s"), True
        return result, False

    def _held(self) -> bool:
        with self._cond:
            return self._aborting or self._closed

    # --- carrying out the verdicts ------------------------------------------------------

    def _handle(self, result: MonitorResult, timed_out: bool, reason: str = "") -> None:
        """Carry out the verdict on one monitor result (`reason` names a state change)."""
        limits = Limits.of(self.config)
        verdict, seen = judge(replace(self._seen, held=self._held()), result.state,
                              timed_out, limits, time.monotonic())
        message = result.message
        if timed_out:
            message = f"monitor timed out ({seen.timeouts} in a row): {result.message}"
        if verdict.action == NOTE:
            self._keep(seen, message)
        elif verdict.action == TOLERATE:
            self._keep(seen, f"monitor found it offline ({seen.tolerated} of "
                             f"{limits.tolerance_limit} tolerated): {message}")
        elif verdict.action == RESTART:
            self._restart(seen, message or "found offline")
        elif verdict.action == FAULT:
            self._fault(verdict.reason, message or "found offline", seen)
        elif verdict.action == SET:
            if verdict.reason == "FoundOnline" and not reason:
                message = f"found online (not started by this agent run): {message}"
            self._set(verdict.state, reason or verdict.reason, message, seen)

    def _restart(self, seen: Seen, message: str) -> None:
        """RESTART: announce it, clean (confirmed), then online again in place."""
        limit = self.config.restart_limit
        self._set(STARTING, "Restart", f"{message}; restart {seen.restarts} of {limit}",
                  seen)
        self._emit("ResourceRestarted", {"group": self.group, "resource": self.name,
                                         "restarts": seen.restarts})
        if not self._clean(STARTING, "Restart", message, announce=True):
            return
        self._apply_pending()
        self._start("Restart")

    def _fault(self, reason: str, message: str, seen: Seen | None = None) -> None:
        """FAULT: report it at once, clean, then Faulted (Unknown if clean fails)."""
        self._emit("ResourceFaulted", {"group": self.group, "resource": self.name,
                                       "reason": reason, "message": message})
        self._set(STOPPING, "Clean", message, seen)
        self._clean(FAULTED, reason, message, announce=False)

    def _clean(self, then: str, reason: str, message: str, announce: bool) -> bool:
        """Run clean and a monitor to confirm it stopped; carry out after_clean (on to
        `then`, or Unknown). `announce`: a clean that fails is a fault to report."""
        problem = ""
        try:
            self.resource.clean(float(self.config.timeouts.clean_seconds))
        except ACTION_FAILURES as e:
            problem = f"clean failed: {e}"
        if not problem:
            # Only a monitor that confirms it stopped will do: a failed or timed-out one
            # leaves it in doubt.
            result, timed_out = self._monitor()
            if timed_out or result.state != OFFLINE:
                problem = f"not confirmed stopped after clean ({result.state.lower()}): " \
                          f"{result.message}"
        verdict, seen = after_clean(self._seen, not problem, then, reason)
        if problem:
            message = f"{problem} (after: {message})" if message else problem
            if announce:
                self._emit("ResourceFaulted", {"group": self.group, "resource": self.name,
                                               "reason": verdict.reason, "message": message})
        self._set(verdict.state, verdict.reason, message, seen)
        return not problem

    def _apply_pending(self) -> None:
        if not self.pending_change:
            return
        config = self.config
        self.resource.close()
        self.resource = self._make(config, self.trigger)
        self._active = (config.type, dict(config.attributes))

    def _start(self, reason: str) -> bool:
        """Online, then confirm it within OnlineWaitLimit (state is Starting); False: it
        faulted."""
        config = self.config
        with self._cond:
            aborted = self._aborting
        if aborted:
            # abort() came after this start was asked for (a group's worker may ask just
            # after an abort): start nothing, as if the online action had been killed.
            self._fault(online_failed(False).reason, "online aborted before it started")
            return False
        try:
            self.resource.online(float(config.timeouts.online_seconds))
        except ActionTimeout as e:
            self._fault(online_failed(True).reason, f"online timed out: {e}")
            return False
        except ACTION_FAILURES as e:
            self._fault(online_failed(False).reason, f"online failed: {e}")
            return False
        since = time.monotonic()
        limits = Limits.of(config)
        while True:
            result, timed_out = self._monitor()
            limits = Limits.of(self.config)  # settings may change meanwhile (update)
            now = time.monotonic()
            verdict = confirm_online(since, now, result.state, timed_out, limits)
            if verdict.action == SET:
                self._set(ONLINE, reason, result.message, came_online(self._seen, now))
                return True
            if verdict.action == FAULT or not self._pause(verdict.wait):
                break
        window = limits.online_wait_limit * limits.monitor_interval
        self._fault("OnlineFailed", f"not online {window:g} s after online (OnlineWaitLimit "
                    f"{limits.online_wait_limit}): {result.message}")
        return False

    # --- commands ---------------------------------------------------------------------

    def _run(self, command: _Command) -> None:
        handler = {"probe": self._do_probe, "online": self._do_online,
                   "offline": self._do_offline, "clear": self._do_clear,
                   "replace": self._do_replace}[command.kind]
        handler(command)

    def _finish(self, command: _Command, ok: bool) -> None:
        command.pending.finish(ok, self.state, self.message)

    def _do_probe(self, command: _Command) -> None:
        result, timed_out = self._monitor()
        fresh = self.state in (UNKNOWN, OFFLINE) and not self._seen.was_online
        self._handle(result, timed_out, "Probe" if fresh else "")
        self._finish(command, self.state != UNKNOWN)

    def _do_online(self, command: _Command) -> None:
        if self.state == FAULTED or self._seen.faulted:
            self._finish(command, False)  # faults are cleared first (hagrp -clear)
            return
        result, timed_out = self._monitor()
        if result.state == ONLINE and not timed_out:
            if self.state != ONLINE:
                self._set(ONLINE, command.reason, result.message,
                          came_online(self._seen, time.monotonic()))
            self._finish(command, True)
            return
        if self.state == ONLINE:
            # Online but the monitor disagrees: the usual rules decide (restart or fault).
            self._handle(result, timed_out)
            self._finish(command, self.state == ONLINE)
            return
        if timed_out or result.state != OFFLINE:
            # In doubt (a failed or timed-out monitor): it may run, so it is stopped, and
            # that confirmed, before it is started (as Pacemaker recovers a failed one).
            self._set(STARTING, command.reason, f"cleaning first: {result.message}")
            if not self._clean(STARTING, command.reason, result.message, announce=False):
                self._finish(command, False)
                return
        self._apply_pending()
        self._set(STARTING, command.reason, "")
        self._finish(command, self._start(command.reason))

    def _do_offline(self, command: _Command) -> None:
        config = self.config
        result, _ = self._monitor()
        if result.state == OFFLINE and self.state in (OFFLINE, FAULTED):
            self._finish(command, True)
            return
        offline_timeout = float(config.timeouts.offline_seconds)
        clean_timeout = float(config.timeouts.clean_seconds)
        if command.deadline is not None:
            # Half the time left to go offline, 30 % to clean, the rest for the monitors
            # around them: a self-fence must be done by its deadline, not just after it.
            left = max(command.deadline - time.monotonic(), 1.0)
            offline_timeout = min(offline_timeout, left * 0.5)
            clean_timeout = min(clean_timeout, left * 0.3)
        self._set(STOPPING, command.reason, command.note)
        problem = ""
        try:
            self.resource.offline(offline_timeout)
        except ACTION_FAILURES as e:
            problem = f"offline failed: {e}"
        if not problem:
            deadline = time.monotonic() + offline_timeout
            while True:
                result, _ = self._monitor()
                if result.state == OFFLINE:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._pause(min(OFFLINE_POLL_SECONDS, left)):
                    problem = f"still {result.state.lower()} after offline: {result.message}"
                    break
        if problem:
            try:
                self.resource.clean(clean_timeout)
            except ACTION_FAILURES as e:
                problem = f"{problem}; clean failed: {e}"
            result, _ = self._monitor()
            if result.state != OFFLINE:
                text = f"{problem}; still {result.state.lower()}: {result.message}"
                self._emit("ResourceFaulted", {"group": self.group, "resource": self.name,
                                               "reason": "CleanFailed", "message": text})
                self._set(UNKNOWN, "CleanFailed", text,
                          replace(self._seen, was_online=True, steady_since=None))
                self._finish(command, False)
                return
            problem = f"{problem} (cleaned)"
        self._set(OFFLINE, command.reason, problem or command.note or result.message,
                  stopped_counters(self._seen))
        self._finish(command, True)

    def _do_clear(self, command: _Command) -> None:
        self._keep(cleared(self._seen))
        if self.state in (FAULTED, UNKNOWN):
            result, timed_out = self._monitor()
            seen = self._seen
            if result.state == ONLINE and not timed_out:
                seen = came_online(seen, time.monotonic())
            else:
                seen = stopped_counters(seen)
            self._set(UNKNOWN if timed_out else result.state, "Clear", result.message, seen)
        self._finish(command, self.state != UNKNOWN)

    def _do_replace(self, command: _Command) -> None:
        if self.state in (OFFLINE, FAULTED) and self.pending_change:
            self._apply_pending()
            result, timed_out = self._monitor()
            self._handle(result, timed_out)
        self._finish(command, True)
