"""Polling for a condition with a deadline: how tests wait for real processes to act.

A wait that runs out fails the test naming what it waited for; it never decides a
correctness rule by how long something took (timings belong to hack/bench).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

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


async def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
                     what: str = "") -> Any:
    """`wait_for` on an event loop: `predicate` may return an awaitable (a coroutine
    function's call), whose result counts; the loop runs the test's other tasks (followers,
    servers) between the polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)
