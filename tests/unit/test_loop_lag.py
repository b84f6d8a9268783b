"""The operator's own lateness (guestha.channel.looplag): which timeouts are evidence that an
agent stopped answering, as tables, and the loop's lateness as the timer records it."""

from __future__ import annotations

import asyncio
import time

import pytest

from guestha.channel.looplag import LoopLag, late_within, silence_counts

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("spans", "start", "end", "late"), [
    ([], 0.0, 10.0, 0.0),
    ([(2.0, 5.0)], 0.0, 10.0, 3.0),  # wholly inside
    ([(2.0, 5.0)], 3.0, 10.0, 2.0),  # cut at the start
    ([(2.0, 5.0)], 0.0, 4.0, 2.0),  # cut at the end
    ([(2.0, 5.0)], 5.0, 10.0, 0.0),  # before the window
    ([(12.0, 15.0)], 0.0, 10.0, 0.0),  # after it
    ([(1.0, 2.0), (3.0, 3.5), (9.0, 12.0)], 0.0, 10.0, 2.5),
])
def test_late_within_sums_the_spans_inside_the_window(
        spans: list[tuple[float, float]], start: float, end: float, late: float) -> None:
    assert late_within(spans, start, end) == pytest.approx(late)


@pytest.mark.parametrize(("waited", "late", "deadline", "counts"), [
    (10.0, 0.0, 10.0, True),  # an on-time loop: the agent had its whole deadline
    (10.02, 0.02, 10.0, True),  # the loop's jitter: still the agent's silence
    (10.0, 8.0, 10.0, False),  # the loop was blocked for most of it: no evidence
    (17.0, 7.0, 10.0, True),  # fired late, but the agent had 10 s on time
    (16.9, 7.0, 10.0, False),  # 9.9 s on time: not its whole deadline
    (10.0, -1.0, 10.0, True),  # a negative lateness is none
])
def test_a_timeout_counts_only_for_a_whole_deadline_of_on_time_loop(
        waited: float, late: float, deadline: float, counts: bool) -> None:
    assert silence_counts(waited, late, deadline) is counts


def test_a_blocked_loop_is_recorded_late_and_an_open_stall_counts_until_now() -> None:
    async def scenario() -> tuple[float, float, float]:
        lag = LoopLag(asyncio.get_running_loop(), interval=0.05, tolerance=0.02)
        try:
            await asyncio.sleep(0.2)
            start = asyncio.get_running_loop().time()
            time.sleep(0.5)  # the loop blocked: the timer cannot run
            open_now = lag.late(start)  # before the timer ran again: counted up to now
            await asyncio.sleep(0.2)
            recorded = lag.late(start)
            quiet = asyncio.get_running_loop().time()
            await asyncio.sleep(0.2)
            return open_now, recorded, lag.late(quiet)
        finally:
            lag.stop()
    open_now, recorded, after = asyncio.run(scenario())
    # the block is at least its length less the timer's interval (it was due within it)
    assert open_now >= 0.5 - 0.05
    assert recorded >= 0.5 - 0.05
    assert after < 0.5 - 0.05  # the block is not counted in a window after it
