"""The agent's ordered event log: what the operator long-polls to learn of changes at once.

Events carry sequence numbers that increase by one. The log keeps the newest `capacity`
events in a ring; a reader asks for everything after the last sequence it saw and gets it
immediately when newer events exist, or waits (bounded) for the next one. A reader that
fell behind the ring, or that talks to a restarted agent (a new `stream`), is told so
plainly and resynchronises from the status endpoint. The events and batches themselves
are the protocol's (guestha.protocol.events), as the operator reads them.

The ring holds each event as its payload's JSON text (a `_Held` tuple), not as an Event
with a dict: a full ring of typical events takes about a third of the memory (4096
ResourceState events: 1.5 MB instead of 4.4 MB measured on Python 3.9), and a read decodes
only what it answers with. The ring holds RING_CAPACITY events: minutes of the busiest
agent's events (bringing 50 resources Online makes about 180), enough for the operator to
catch up after a dropped connection; a reader further behind resynchronises from the
status (410), so a larger ring buys nothing but memory. A full ring is memory the
benchmark's two minutes never show: 1024 typical events take 366 KiB on Python 3.9 (2048
took 720 KiB), so a long-running agent with 50 resources (23,972 KiB p95, measured with
about 180 events held) stays under issue 16's 25 MB (24,414 KiB) with a full ring;
tests/unit/test_agent_state.py holds a full ring to 420 KiB.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.events import Event, EventBatch

if TYPE_CHECKING:
    from typing import Any


def rfc3339(t: float) -> str:
    """Wall-clock seconds as an RFC 3339 UTC timestamp with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


RING_CAPACITY = 1024

class _Held:
    """One event in the ring; `data` is its payload as JSON text."""

    __slots__ = ("data", "kind", "seq", "time")

    def __init__(self, seq: int, kind: str, time: str, data: str) -> None:
        self.seq, self.kind, self.time, self.data = seq, kind, time, data

    def event(self) -> Event:
        return Event(self.seq, self.kind, self.time, json.loads(self.data))


class EventGone(Exception):
    """The events asked for are no longer held (the ring moved on, or the agent restarted)."""

    def __init__(self, message: str, first_seq: int, last_seq: int) -> None:
        super().__init__(message)
        self.first_seq = first_seq
        self.last_seq = last_seq


class EventLog:
    """A bounded, thread-safe, ordered log with blocking reads."""

    def __init__(self, capacity: int = RING_CAPACITY, stream: str | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.stream = stream or os.urandom(8).hex()
        self._ring: collections.deque[_Held] = collections.deque(maxlen=capacity)
        self._last = 0
        self._cond = threading.Condition()
        self._closed = False

    def emit(self, kind: str, data: dict[str, Any]) -> int:
        """Appends one event (from any thread) and wakes waiting readers; returns its seq."""
        # Kept as JSON text (plain JSON types): a payload that is not must not break every
        # later read.
        text = json.dumps(data, default=str, separators=(",", ":"))
        with self._cond:
            self._last += 1
            self._ring.append(_Held(self._last, kind, rfc3339(time.time()), text))
            self._cond.notify_all()
            return self._last

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._last

    def close(self) -> None:
        """Wakes every waiting reader (the agent is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, after: int, timeout: float, limit: int = 500,
             stream: str | None = None) -> EventBatch:
        """Events with seq > after; waits up to timeout seconds when there are none yet.

        Raises EventGone when `stream` names another agent run, when `after` is ahead of
        this log (a previous run's numbers), or when events after it fell out of the ring.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            first = self._ring[0].seq if self._ring else self._last + 1
            if stream is not None and stream != self.stream:
                raise EventGone(f"stream {stream!r} ended (the agent restarted); this "
                                f"stream is {self.stream!r}: read /v1/status and start "
                                f"again from after=0", first, self._last)
            if after > self._last:
                raise EventGone(f"after={after} is ahead of this stream's newest event "
                                f"{self._last} (the agent restarted?): read /v1/status "
                                f"and start again from after=0", first, self._last)
            if after < first - 1:
                raise EventGone(f"events {after + 1}..{first - 1} are no longer held "
                                f"(the oldest held is {first}): read /v1/status and "
                                f"continue from after={first - 1}", first, self._last)
            while self._last <= after and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            first = self._ring[0].seq if self._ring else self._last + 1
            if after < first - 1:  # overtaken while waiting
                raise EventGone(f"events {after + 1}..{first - 1} are no longer held "
                                f"(the oldest held is {first})", first, self._last)
            start = after - first + 1
            chosen = [self._ring[i] for i in range(start, min(len(self._ring), start + limit))]
            more = start + limit < len(self._ring)
            last = self._last
        return EventBatch(self.stream, last, more, tuple(held.event() for held in chosen))
