"""The simulator's work queue: one worker per key at a time, no lost adds, backoff."""

from __future__ import annotations

import threading
import time

import pytest

from kubevirtsim.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def test_a_key_runs_on_one_worker_at_a_time_and_again_after_a_late_add() -> None:
    stop = threading.Event()
    running: set[str] = set()
    overlap: list[str] = []
    calls: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def handler(key: str) -> None:
        with lock:
            if key in running:
                overlap.append(key)
            running.add(key)
            calls.append(key)
        if len(calls) == 1:
            release.wait(5)
        with lock:
            running.discard(key)

    queue = WorkQueue("t", handler, 4, stop)
    queue.start()
    queue.add("a")
    time.sleep(0.1)
    for _ in range(5):
        queue.add("a")  # added while "a" is processing: one more run, not five
    release.set()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    stop.set()
    queue.shutdown()
    assert calls == ["a", "a"] and not overlap


def test_failures_are_retried_with_backoff() -> None:
    stop = threading.Event()
    times: list[float] = []

    def handler(key: str) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("not yet")

    queue = WorkQueue("t", handler, 1, stop, base_delay=0.05)
    queue.start()
    queue.add("k")
    deadline = time.monotonic() + 5
    while len(times) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    queue.shutdown()
    assert len(times) == 3
    first, second = times[1] - times[0], times[2] - times[1]
    assert first >= 0.04 and second >= 0.09  # 0.05 s, then doubled
