"""The service groups this agent runs: the local half of VCS's HAD.

A GroupRunner holds every configured group (agent/servicegroup.py). Each group has a
worker thread that runs its operations one after the other: probe (monitor every
resource once), online (children first, independent branches in parallel), offline
(parents first, in parallel where possible, clean when offline fails), clear. Each
resource has its own thread (agent/monitor.py) for monitoring and restarts in place.
When a critical resource faults, the worker takes the rest of the group offline, so a
Faulted group is one that is fully stopped and may be started on another member.

The runner never starts a group by itself: new groups, and every group when the agent
starts, are probed only; a Process still running from before an agent restart is adopted.
Resources keep their files (pid files, output logs) under STATE_DIR/resources/GROUP/NAME.

Locks: the one order. The agent is a safety component: a deadlock leaves a member that
heartbeats and pets its watchdog (so it looks healthy) but can neither monitor nor fence.
A thread may take a lock only while every lock it already holds comes earlier here:

1. Serialization locks: Agent._lock, then GroupRunner._configuring. They make a whole
   configuration change run one at a time, from its start to its end. Nothing but a
   configuration change takes them (no event, callback, monitor, status or fencing path),
   so they may be held while calling anything below.
2. GroupRunner._lock: the table of groups. Held only to read or change the table.
3. ServiceGroup._lock (its Condition _cond): one group's state, queue and monitors.
4. ResourceMonitor._cond and ResourceMonitor._data (never nested in each other).
5. Leaves, which take no other lock: Pending._lock, GroupRunner._changed, EventLog._cond,
   Resource._running_lock, ExitWatcher._lock, Store._lock (held across its file write),
   TlsFiles._lock (held across the replacement of the TLS files).
Beside the groups: Api._lock (the operations in flight) is held only to check a command's
epoch and operation id (Store._lock inside it) and record it as in flight; never across
a disk write, an event or a wait.

No event is emitted and no callback runs while a lock of levels 2-5 is held: a group
decides its GroupState events under its lock, queues them in its outbox, and emits them
once the lock is released (one thread emits a group's events at a time, so they keep
their order). Every wait is bounded: idle workers wake up at least every few seconds,
a wait for a resource's command ends after the longest that command may take
(ResourceMonitor.command_bound), and waits for group progress end at their deadline.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.config import FAILOVER, GroupConfig
from guestha.protocol.fields import FieldError

from . import resources
from .dependencies import find_cycle
from .percent import quote
from .servicegroup import WAIT_STEP, Op, ServiceGroup
from .store import remove_folder

if TYPE_CHECKING:
    from typing import Any

    Emit = Callable[[str, dict[str, Any]], None]


class GroupError(ValueError):
    """A group command that cannot be carried out; `code` is NotFound or Conflict."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_groups(groups: Sequence[GroupConfig]) -> list[str]:
    """Every error in a desired configuration, each naming the field."""
    errors: list[str] = []
    seen: set[str] = set()
    for group in groups:
        where = f"groups[{group.name}]"
        if group.name in seen:
            errors.append(f"{where}: duplicate group name")
        seen.add(group.name)
        for resource in group.resources:
            for problem in resources.validate(resource.type, resource.attributes):
                errors.append(f"{where}.resources[{resource.name}].{problem}")
        cycle = find_cycle({r.name: r.depends_on for r in group.resources})
        if cycle:
            errors.append(f"{where}.resources[{cycle[0]}].dependsOn: dependency cycle "
                          f"{' -> '.join(cycle)}")
    return errors


class GroupRunner:
    """Every service group on this member (the interface the channel server drives)."""

    def __init__(self, state_dir: str, emit: Emit) -> None:
        self.state_dir = state_dir
        self._emit = emit
        self.watcher = resources.ExitWatcher()
        self._configuring = threading.Lock()  # one configuration change at a time
        self._lock = threading.Lock()  # the table of groups
        self._changed = threading.Condition(threading.Lock())  # a leaf: notification only
        self._generation = 0  # counts emitted events, under _changed
        self._groups: dict[str, ServiceGroup] = {}
        self._closed = False

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        """Report an event (called with no lock held) and wake whoever waits for a change."""
        with contextlib.suppress(Exception):  # reporting must never stop the work
            self._emit(kind, payload)
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _seen(self) -> int:
        with self._changed:
            return self._generation

    def _wait_change(self, seen: int, timeout: float) -> int:
        """Wait (at most `timeout`) for an event after the one numbered `seen`."""
        with self._changed:
            if self._generation == seen and timeout > 0:
                self._changed.wait(timeout)
            return self._generation

    def group_dir(self, group: str) -> str:
        return os.path.join(self.state_dir, "resources", quote(group))

    def validate(self, groups: Sequence[GroupConfig]) -> list[str]:
        """Every error in a desired set of groups, each naming the field."""
        return validate_groups(groups)

    def configure(self, groups: Sequence[GroupConfig]) -> None:
        """Make the desired groups the running ones (validated as a whole first)."""
        errors = validate_groups(groups)
        if errors:
            raise FieldError("; ".join(errors))
        wanted = {g.name: g for g in groups}
        with self._configuring:
            with self._lock:
                if self._closed:
                    raise GroupError("Conflict", "the agent is shutting down")
                current = dict(self._groups)
            created = {name: ServiceGroup(self, config) for name, config in wanted.items()
                       if current.get(name) is None or current[name].removed}
            with self._lock:
                closed = self._closed
                if not closed:
                    self._groups.update(created)
            if closed:
                for group in created.values():
                    group.close()
                raise GroupError("Conflict", "the agent is shutting down")
            for new in created.values():
                new.submit(Op("probe"))
            for name, config in wanted.items():
                old = current.get(name)
                if name not in created and old is not None \
                        and (old.config != config or old.removing):
                    old.reconfigure(config)
            for name, old in current.items():
                if name not in wanted:
                    old.retire()

    def drop(self, group: ServiceGroup) -> None:
        """A removed group is stopped: forget it and its files (called by the group)."""
        remove_folder(self.group_dir(group.name))
        with self._lock:
            if self._groups.get(group.name) is group:
                del self._groups[group.name]
        threading.Thread(target=group.close, daemon=True).start()

    def _group(self, name: str) -> ServiceGroup:
        with self._lock:
            group = self._groups.get(name)
        if group is None or group.removing:
            raise GroupError("NotFound", f"no service group {name!r} on this member")
        return group

    def online(self, group: str) -> None:
        """Bring a group online (returns at once; progress arrives as events)."""
        target = self._group(group)
        faulted = target.faulted_critical()
        if faulted:
            raise GroupError("Conflict", f"service group {group!r} has faulted critical "
                             f"resource(s) {', '.join(faulted)} here: clear them first")
        target.submit(Op("online"))

    def offline(self, group: str) -> None:
        target = self._group(group)
        target.supersede_online()
        target.submit(Op("offline"))

    def clear(self, group: str) -> None:
        self._group(group).submit(Op("clear"))

    def probe(self, group: str) -> None:
        self._group(group).submit(Op("probe"))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            groups = dict(self._groups)
        return {"groups": {name: g.snapshot() for name, g in groups.items()}}

    def take_failover_groups_offline(self, reason: str, timeout: float) -> bool:
        """Self-fencing: every Failover group offline within `timeout` (clean where offline
        fails); running online actions are killed. True when all are offline in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            targets = [g for g in self._groups.values() if g.config.type == FAILOVER]
        for group in targets:
            group.abort_online()
            group.submit(Op("offline", reason="SelfFence", note=reason, deadline=deadline),
                         front=True)
        # No lock is held while a group is asked whether it is down (it takes its own).
        seen = self._seen()
        while not all(g.is_down() for g in targets):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            seen = self._wait_change(seen, min(left, WAIT_STEP))
        return True

    def wait_until(self, predicate: Callable[[Mapping[str, Any]], bool],
                   timeout: float) -> bool:
        """Wait until predicate(snapshot()) holds (for tests and the agent's own use)."""
        deadline = time.monotonic() + timeout
        seen = self._seen()
        while True:
            if predicate(self.snapshot()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            seen = self._wait_change(seen, min(left, 0.05))

    def close(self) -> None:
        """Stop monitoring (resources keep running: a new agent process adopts them)."""
        with self._lock:
            self._closed = True
            groups = list(self._groups.values())
        for group in groups:
            group.close()
        self.watcher.close()
