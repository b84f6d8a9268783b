"""Per-namespace wake-up signals: a VM or VMI change wakes the clusters of its namespace.

Index functions run on the event loop for every change kopf sees; they only set the
events of that namespace's subscribers here, and each cluster's daemon re-reads its
members when woken, instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator


class Wakeups:
    """Subscribers per namespace, each with an event of its own."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, namespace: str) -> None:
        for event in self._subscribers.get(namespace, ()):
            event.set()

    def notify_all(self) -> None:
        """A cluster-wide change (a Node, a node Lease): every subscriber looks again."""
        for events in self._subscribers.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def subscribe(self, namespace: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._subscribers[namespace].add(event)
        try:
            yield event
        finally:
            self._subscribers[namespace].discard(event)

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        """Return when the event was set, or after `timeout` seconds (a resync)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()


WAKEUPS = Wakeups()
