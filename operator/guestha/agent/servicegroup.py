"""One service group on this member: its resources' monitors and its worker thread.

The worker runs the group's operations one after the other (probe, online, offline,
clear, reconfigure, remove) and stops the rest of the group when a critical resource
faults. It decides the group's state under its lock (guestha.protocol.states.group_state) and emits
the GroupState events it decided only after releasing that lock (_locked, _flush): the
lock order and the rules on waits are in agent/groups.py, which holds every group.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from guestha.protocol import TYPE_CHECKING
from guestha.protocol import events as kinds
from guestha.protocol.config import GroupConfig, ResourceConfig
from guestha.protocol.states import (
    FAULTED,
    GOING_OFFLINE,
    GOING_ONLINE,
    OFFLINE,
    ONLINE,
    UNKNOWN,
    critical_fault,
    group_state,
    must_take_down,
)

from . import resources
from .dependencies import ready_to_start, ready_to_stop
from .monitor import Pending, ResourceMonitor
from .percent import quote
from .store import FaultRecord, remove_folder

if TYPE_CHECKING:
    from typing import Any, Protocol

WAIT_STEP = 0.5  # seconds between progress checks when no notification arrives
IDLE_WAKE_SECONDS = 5.0  # an idle worker looks at its queue at least this often


if TYPE_CHECKING:
    class Host(Protocol):
        """What a group needs of the runner that holds it (agent/groups.GroupRunner)."""

        watcher: resources.ExitWatcher

        def emit(self, kind: str, payload: dict[str, Any]) -> None: ...
        def group_dir(self, group: str) -> str: ...
        def drop(self, group: ServiceGroup) -> None: ...


@dataclass
class Op:
    kind: str  # probe, online, offline, clear, check, reconfigure, remove
    reason: str = ""
    note: str = ""
    deadline: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ServiceGroup:
    """One service group: its resources' monitors and its worker (see the module)."""

    def __init__(self, runner: Host, config: GroupConfig) -> None:
        self.runner = runner
        self.config = config
        self.name = config.name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[Op] = collections.deque()
        self._abort = threading.Event()
        self._outbox: list[tuple[str, dict[str, Any]]] = []  # events decided, not yet emitted
        self._flushing = False
        self.transition: str | None = None
        self.state = UNKNOWN
        self.removing = False
        self.removed = False
        self._closed = False
        self._retired: dict[str, ResourceMonitor] = {}  # removed from config, not yet stopped
        self.monitors: dict[str, ResourceMonitor] = {}
        for resource in config.resources:
            self.monitors[resource.name] = self._monitor(resource)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"group-{self.name}")
        self._thread.start()

    # --- plumbing -----------------------------------------------------------------------

    def _monitor(self, config: ResourceConfig) -> ResourceMonitor:
        return ResourceMonitor(self.name, config, self._make, self.runner.emit,
                               self._resource_changed,
                               FaultRecord(self.resource_dir(config.name)))

    def resource_dir(self, resource: str) -> str:
        return os.path.join(self.runner.group_dir(self.name), quote(resource))

    def _make(self, config: ResourceConfig, notify: Callable[[], None]) -> resources.Resource:
        context = resources.ResourceContext(self.name, config.name,
                                            self.resource_dir(config.name),
                                            self.runner.watcher, notify)
        return resources.create(config.type, context, config.attributes)

    def _depends(self) -> dict[str, tuple[str, ...]]:
        return {r.name: r.depends_on for r in self.config.resources}

    def _critical(self, name: str) -> bool:
        monitor = self.monitors.get(name)
        return monitor.config.critical if monitor is not None else False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The group's lock; the events decided under it are emitted after its release."""
        with self._cond:
            yield
        self._flush()

    def _derive(self) -> None:
        """Recompute the group state (lock held); a change is queued for _flush."""
        pairs = [(m.state, m.config.critical) for m in self.monitors.values()]
        pairs += [(m.state, False) for m in self._retired.values()]
        state = group_state(pairs, self.transition)
        if state != self.state:
            previous, self.state = self.state, state
            self._outbox.append((kinds.GROUP_STATE, {"group": self.name, "state": state,
                                                     "previous": previous}))

    def _flush(self) -> None:
        """Emit the queued events, in order, with no lock held (lock not held on entry)."""
        while True:
            with self._cond:
                if self._flushing or not self._outbox:
                    return  # another thread is emitting; it takes these too
                self._flushing = True
                batch, self._outbox = self._outbox, []
            try:
                for kind, payload in batch:
                    self.runner.emit(kind, payload)
            finally:
                with self._cond:
                    self._flushing = False

    def _resource_changed(self, monitor: ResourceMonitor) -> None:
        with self._locked():
            if monitor.state == FAULTED and monitor.config.critical \
                    and self.transition is None and not any(
                        op.kind == "check" for op in self._queue):
                # The worker stops the rest of the group next; until it does, the group is
                # already on its way down (never reported as Partial in between).
                if self._needs_take_down():
                    self.transition = GOING_OFFLINE
                self._queue.appendleft(Op("check", reason="Fault"))
            self._derive()
            self._cond.notify_all()

    def _needs_take_down(self) -> bool:
        """A critical resource is faulted while others still run (lock held)."""
        return must_take_down((m.state, m.config.critical) for m in self.monitors.values())

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def submit(self, op: Op, front: bool = False) -> Op:
        with self._cond:
            if self._closed:
                op.done.set()
                return op
            if front:
                self._queue.appendleft(op)
            else:
                self._queue.append(op)
            self._cond.notify_all()
        return op

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(IDLE_WAKE_SECONDS)
                if self._closed:
                    pending = list(self._queue)
                    self._queue.clear()
                    for op in pending:
                        op.done.set()
                    return
                op = self._queue.popleft()
                if op.kind == "online":
                    # Under the lock supersede_online() sets it with: an abort from now
                    # on stops this online; one before it dropped the op from the queue.
                    self._abort.clear()
            try:
                self._run(op)
                if op.kind not in ("remove",):
                    self._take_down_after_critical_fault()
            except Exception:  # an agent bug must not stop the group's worker
                self.runner.emit(kinds.AGENT_ERROR, {
                    "group": self.name, "operation": op.kind,
                    "message": traceback.format_exc(limit=5)})
            finally:
                op.done.set()

    def _run(self, op: Op) -> None:
        if op.kind == "probe":
            self._wait_all([m.probe() for m in list(self.monitors.values())])
        elif op.kind == "online":
            self._online()
        elif op.kind == "offline":
            self._offline(op.reason or "Offline", op.deadline, op.note)
        elif op.kind == "clear":
            self._wait_all([m.clear() for m in list(self.monitors.values())])
        elif op.kind == "reconfigure":
            self._stop_retired()
        elif op.kind == "remove":
            self._remove()

    def _wait_all(self, pendings: Sequence[Pending]) -> bool:
        """Wait for resource commands, each for at most as long as it may take."""
        ok = True
        for pending in pendings:
            ok = pending.wait(pending.bound) and ok
        return ok

    def _set_transition(self, transition: str | None) -> None:
        with self._locked():
            self.transition = transition
            self._derive()

    def _wait_progress(self) -> None:
        with self._cond:
            self._cond.wait(WAIT_STEP)

    # --- operations (in the worker) ------------------------------------------------------

    def _online(self) -> None:
        self._set_transition(GOING_ONLINE)
        started: dict[str, Pending] = {}
        try:
            while True:
                with self._cond:
                    depends = self._depends()
                    monitors = dict(self.monitors)
                failed = {name for name, p in started.items() if p.done and not p.ok}
                failed |= {n for n, m in monitors.items() if m.state == FAULTED}
                # A critical resource that faulted, or failed to start: start no more.
                if self._abort.is_set() or critical_fault(
                        [(m.state, m.config.critical) for m in monitors.values()]
                        + [(FAULTED, self._critical(n)) for n in failed]):
                    ready: list[str] = []
                else:
                    online = [n for n, m in monitors.items() if m.state == ONLINE]
                    ready = ready_to_start(depends, online, [*started, *failed])
                for name in ready:
                    pending = monitors[name].online()
                    if self._abort.is_set():
                        # Aborted after the check above: abort_online() may have aborted
                        # this resource before its online re-armed it, so once more.
                        monitors[name].abort()
                    pending.add_done_callback(self._wake)
                    started[name] = pending
                if not ready and all(p.done for p in started.values()):
                    return
                if not ready:
                    self._wait_progress()
        finally:
            with self._locked():
                # Straight on to stopping the rest if a critical resource faulted.
                self.transition = GOING_OFFLINE if self._needs_take_down() else None
                self._derive()

    def _offline(self, reason: str, deadline: float | None = None, note: str = "") -> bool:
        self._set_transition(GOING_OFFLINE)
        stopping: dict[str, Pending] = {}
        try:
            while True:
                with self._cond:
                    depends = self._depends()
                    monitors = dict(self.monitors)
                down = [n for n, p in stopping.items() if p.done and p.ok]
                ready = ready_to_stop(depends, down, stopping)
                for name in ready:
                    pending = monitors[name].offline(reason, deadline, note)
                    pending.add_done_callback(self._wake)
                    stopping[name] = pending
                if not ready and all(p.done for p in stopping.values()):
                    return len(down) == len(depends)
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                if not ready:
                    self._wait_progress()
        finally:
            self._set_transition(None)

    def _take_down_after_critical_fault(self) -> None:
        """A critical resource faulted: stop the rest of the group (VCS faults the group)."""
        with self._locked():
            needed = self._needs_take_down()
            faulted = [m.name for m in self.monitors.values()
                       if m.state == FAULTED and m.config.critical]
            if not needed and self.transition is not None:
                self.transition = None
                self._derive()
        if needed:
            self._offline("Fault", note=f"critical resource {', '.join(faulted)} faulted")

    def _stop_retired(self) -> None:
        with self._cond:
            retired = dict(self._retired)
        for name, monitor in retired.items():
            pending = monitor.offline("Removed")
            if not pending.wait(pending.bound) or monitor.state not in (OFFLINE, FAULTED):
                continue  # still shown (retired) in the status; the next change retries
            with self._locked():
                if self._retired.get(name) is not monitor:
                    continue  # configured again meanwhile: it stays
                del self._retired[name]
                self._derive()
            monitor.close()
            remove_folder(self.resource_dir(name))

    def _remove(self) -> None:
        stopped = self._offline("Removed")
        with self._locked():
            if not self.removing:
                return  # configured again meanwhile: it stays (offline)
            if not stopped:
                self.removing = False  # could not stop everything: keep it and report it
                self._derive()
                return
            self.removed = True
        self.runner.drop(self)

    # --- commands (any thread) -------------------------------------------------------------

    def reconfigure(self, config: GroupConfig) -> None:
        """Apply a new configuration of this group (no lock held by the caller)."""
        wanted = {r.name: r for r in config.resources}
        with self._cond:
            known = set(self.monitors) | set(self._retired)
        # Monitors are made outside the lock: making one reads its resource's files.
        made = {name: self._monitor(r) for name, r in wanted.items() if name not in known}
        with self._locked():
            self.config = config
            self.removing = False
            for op in [op for op in self._queue if op.kind == "remove"]:
                self._queue.remove(op)
                op.done.set()
            for name, monitor in self.monitors.items():
                if name not in wanted:
                    self._retired[name] = monitor
            monitors: dict[str, ResourceMonitor] = {}
            for name, resource in wanted.items():
                existing = self.monitors.get(name) or self._retired.pop(name, None) \
                    or made.get(name)
                if existing is None:  # stopped and dropped since it was looked at
                    existing = made[name] = self._monitor(resource)
                monitors[name] = existing
            self.monitors = monitors
            retired = bool(self._retired)
            self._derive()
        new = [m for m in made.values() if m in monitors.values()]
        for monitor in made.values():
            if monitor not in new:
                monitor.close()  # made for a name that was still there after all
        for name, resource in wanted.items():
            if monitors[name] not in new:
                monitors[name].update(resource)
        for monitor in new:
            monitor.probe()
        if retired:
            self.submit(Op("reconfigure"))

    def retire(self) -> None:
        """The group is no longer configured here: stop it, then drop it."""
        with self._locked():
            if self.removing or self.removed:
                return
            self.removing = True
        self.abort_online()
        self.submit(Op("remove"))

    def supersede_online(self) -> None:
        """An offline was asked for: drop queued onlines, start no further resources."""
        with self._cond:
            self._abort.set()
            for op in [op for op in self._queue if op.kind == "online"]:
                self._queue.remove(op)
                op.done.set()

    def abort_online(self) -> None:
        """Stop bringing the group online at once: as supersede_online, and running online
        actions are killed and no resource restarts in place until the next online."""
        self.supersede_online()
        with self._cond:
            monitors = list(self.monitors.values())
        for monitor in monitors:
            monitor.abort()

    def faulted_critical(self) -> list[str]:
        with self._cond:
            return [m.name for m in self.monitors.values()
                    if m.state == FAULTED and m.config.critical]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            monitors = [*self.monitors.values(), *self._retired.values()]
        self._abort.set()
        self._thread.join(2.0)
        for monitor in monitors:
            monitor.close(wait=1.0)

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            monitors = [*self.monitors.values(), *self._retired.values()]
            data: dict[str, Any] = {"state": self.state, "type": self.config.type}
            if self.removing:
                data["removing"] = True
        data["resources"] = [m.snapshot() for m in monitors]
        return data

    def is_down(self) -> bool:
        with self._cond:
            return self.transition is None and not self._queue and all(
                m.state in (OFFLINE, FAULTED) for m in self.monitors.values())
