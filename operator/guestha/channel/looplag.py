"""How late the operator's own event loop ran: a silence the operator caused is no evidence.

The operator follows 1,500 agents from one event loop. When that loop is late (a burst
of work at start, a blocking call, a starved machine), an agent's answer can sit unread
in its socket while the deadline of the request that waits for it passes: the request
times out although the agent answered in time. Taken at its word, that timeout makes a
healthy member unreachable, and, with no peer vouching for it, lost and fenced (that is
how 500 clusters x 3 fenced 19 healthy members). The agent has the same problem with its
own pauses and discounts them (agent/quorum.py, `resumed_after`); this is the operator's
side of it.

`LoopLag` measures: a timer that asks to run every `interval` seconds records each time it
ran more than `tolerance` late as a late span (expected, actual) of the loop's clock. A
span still open (the loop has not come back to the timer yet) counts too, up to now.

The rules are pure functions of those spans and times, tested with tables:
- `late_within(spans, start, end)`: seconds of [start, end] the loop spent late;
- `silence_counts(waited, late, deadline)`: a request that waited `waited` seconds for
  an answer, `late` of them with the loop late, is evidence of a silent agent only when
  the agent had its whole deadline of loop time that was on time: `waited - late >=
  deadline`. Otherwise the loop, not the agent, made the answer miss its deadline.
The asyncio client applies it as it waits (guestha.channel.aio_client): a request's
deadline moves on by the loop's lateness, up to STRETCH_MAX times the deadline, so an
answer that waited unread is still read on the same connection (no reconnection storm
when the whole machine is loaded); past that bound the request fails with stage LATE.
A hung agent is still found: the first exchange whose deadline passes while the loop
runs on time counts. While the loop stays late, no timeout counts; a member is then lost
only by what others say (its peers, KubeVirt), never by the operator's own slowness.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Iterable

INTERVAL = 0.1  # seconds between the timer's runs
TOLERANCE = 0.05  # lateness below this is the loop's ordinary jitter: not recorded
KEEP_SECONDS = 600.0  # spans older than this are forgotten (longer than any deadline)
KEEP_SPANS = 4096  # and at most this many
LATE = "late"  # the ChannelError stage of a timeout that `silence_counts` does not count
STRETCH_MAX = 3.0  # a deadline moves on by the loop's lateness up to this many times itself


def late_within(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] covered by the late spans (each (from, to), not
    overlapping, as LoopLag records them)."""
    total = 0.0
    for a, b in spans:
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += hi - lo
    return total


def silence_counts(waited: float, late: float, deadline: float) -> bool:
    """Whether a request's timeout is evidence that the agent is silent (see the module):
    the agent had `deadline` seconds of an on-time loop and did not answer in them."""
    return waited - max(0.0, late) >= deadline


class LoopLag:
    """The late spans of one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = INTERVAL,
                 tolerance: float = TOLERANCE) -> None:
        self._loop = loop
        self.interval, self.tolerance = interval, tolerance
        self.spans: deque[tuple[float, float]] = deque(maxlen=KEEP_SPANS)
        self._due = loop.time() + interval
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        if now - self._due > self.tolerance:
            self.spans.append((self._due, now))
        while self.spans and self.spans[0][1] < now - KEEP_SECONDS:
            self.spans.popleft()
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def late(self, start: float, end: float | None = None) -> float:
        """Seconds of [start, end] (end: now) that the loop spent late, the span still
        open included."""
        now = self._loop.time()
        end = now if end is None else end
        spans: list[tuple[float, float]] = list(self.spans)
        if now - self._due > self.tolerance:
            spans.append((self._due, now))  # the timer has not run yet: late until now
        return late_within(spans, start, end)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = \
    weakref.WeakKeyDictionary()


def of_running_loop() -> LoopLag:
    """The running loop's LoopLag, started on first use (one per loop)."""
    loop = asyncio.get_running_loop()
    lag = _BY_LOOP.get(loop)
    if lag is None or lag._handle is None:
        lag = _BY_LOOP[loop] = LoopLag(loop)
    return lag


