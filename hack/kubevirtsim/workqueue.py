"""A work queue keyed by object, as client-go's rate-limited queue is for KubeVirt.

A key is processed by one worker at a time; a key added while it is being processed runs
again afterwards (once, however many times it was added). A failing key is retried with
exponential backoff; a handler can also ask for a later look (`add_after`), e.g. to poll
the guest agent. An exception in one key never stops the workers.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class WorkQueue:
    """Keys to reconcile, processed by `workers` threads calling `handler(key)`."""

    def __init__(
        self,
        name: str,
        handler: Callable[[str], None],
        workers: int,
        stop: threading.Event,
        base_delay: float = 0.05,
        max_delay: float = 10.0,
    ) -> None:
        self.name = name
        self.handler = handler
        self.workers = workers
        self.stop = stop
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()  # added while processing: run again after
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._threads: list[threading.Thread] = []

    # --- adding ----------------------------------------------------------------------------
    def add(self, key: str) -> None:
        with self._cond:
            if key in self._processing:
                self._dirty.add(key)
                return
            if key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def retry_delay(self, key: str) -> float:
        with self._cond:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        return float(min(self.base_delay * 2 ** (failures - 1), self.max_delay))

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._delayed) + len(self._processing)

    # --- running ---------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _next(self) -> str | None:
        with self._cond:
            while not self.stop.is_set():
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, key = heapq.heappop(self._delayed)
                    if key in self._processing:
                        self._dirty.add(key)
                    elif key not in self._queued:
                        self._queued.add(key)
                        self._ready.append(key)
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                wait = self._delayed[0][0] - now if self._delayed else 0.5
                self._cond.wait(timeout=min(max(wait, 0.001), 0.5))
            return None

    def _done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def _work(self) -> None:
        while True:
            key = self._next()
            if key is None:
                return
            try:
                self.handler(key)
                self.forget(key)
            except Exception as exc:
                delay = self.retry_delay(key)
                if getattr(exc, "conflict", False):
                    log.debug("%s %s: conflict, again in %.2fs", self.name, key, delay)
                else:
                    log.exception("%s %s failed; again in %.2fs", self.name, key, delay)
                self.add_after(key, delay)
            finally:
                self._done(key)
