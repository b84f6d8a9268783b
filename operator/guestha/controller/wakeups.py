"""Wake-up signals: a change wakes the daemons that read it, and only those.

Index and event functions run on the event loop for every change kopf sees; they only set
the events of the subscribers concerned here, and each daemon re-reads what it needs when
woken, instead of polling. At 500 clusters (10 per namespace) waking every daemon of a
namespace for each VM or VMI change made ten passes where one was due; so a subscriber
says what concerns it: its cluster's name (a change of the InGuestCluster, of a
ServiceGroup naming it) and a test of VM names (`wants`: its members and members leaving;
None: every VM of the namespace, as for a memberSelector).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Subscription:
    """One daemon's wake-up: its event, its cluster (None: any) and the VMs it reads."""

    cluster: str | None = None
    wants: Callable[[str], bool] | None = None  # VM (= VMI) names; None: all of them
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def concerned(self, cluster: str | None, vm: str | None) -> bool:
        if cluster is not None and self.cluster is not None and cluster != self.cluster:
            return False
        return vm is None or self.wants is None or self.wants(vm)


class Fingerprints:
    """The last fingerprint seen per object: whether an event changed what the daemons
    read of it. An object's own status write (the supervisor wrote it, it knows it) or a
    Node's heartbeat changes nothing they act on, and wakes nobody."""

    def __init__(self) -> None:
        self._last: dict[Any, Any] = {}

    def changed(self, key: Any, fingerprint: Any) -> bool:
        if self._last.get(key, _UNSEEN) == fingerprint:
            return False
        self._last[key] = fingerprint
        return True


_UNSEEN = object()


class Wakeups:
    """Subscribers per namespace (see the module docstring)."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)

    def notify(self, namespace: str, *, cluster: str | None = None,
               vm: str | None = None) -> None:
        """A change in `namespace`: of what concerns `cluster` (None: any cluster), or of
        the VM or VMI `vm` (None: not one VM). Wakes the subscribers concerned."""
        for sub in self._subscribers.get(namespace, ()):
            if sub.concerned(cluster, vm):
                sub.event.set()

    def notify_all(self) -> None:
        """A cluster-wide change (a Node, leadership): every subscriber looks again."""
        for subs in self._subscribers.values():
            for sub in subs:
                sub.event.set()

    @contextlib.contextmanager
    def subscribe(self, namespace: str, cluster: str | None = None,
                  wants: Callable[[str], bool] | None = None) -> Iterator[asyncio.Event]:
        sub = Subscription(cluster, wants)
        self._subscribers[namespace].add(sub)
        try:
            yield sub.event
        finally:
            self._subscribers[namespace].discard(sub)
            if not self._subscribers[namespace]:
                del self._subscribers[namespace]

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        """Return when the event was set, or after `timeout` seconds (a resync)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: see leadership._call
                await event.wait()
        event.clear()


WAKEUPS = Wakeups()
