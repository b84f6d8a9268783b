"""Polling for a condition with a deadline: how tests wait for real processes to act.

A wait that runs out fails the test naming what it waited for; it never decides a
correctness rule by how long something took (timings belong to hack/bench).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.05,
             what: str = "") -> T:
    """Polls `predicate` every `interval` seconds until it returns something true, which is
    returned; raises AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
