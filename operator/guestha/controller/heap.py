"""The operator's heap: freed memory handed back to the system after a burst.

At 500 clusters the start burst (kopf's 4,000 workers, 1,500 TLS handshakes and answers,
500 status writes from threads) raised the process to about 600 MB; most of it was freed
afterwards but stayed with glibc's allocator: `malloc_trim(0)`, called from gdb into the
running operator, gave back 250 MB. Two things keep that high-water mark down:

- `limit_arenas`: glibc gives each thread that allocates concurrently an arena of its
  own (up to 8 per core), each keeping its own freed memory; the operator's threads (the
  API calls of asyncio.to_thread, the Lease renewal) do little, so two arenas are enough
  (`mallopt(M_ARENA_MAX, 2)`, what MALLOC_ARENA_MAX=2 does; set first thing in main(),
  before those threads exist).
- `trim`: `malloc_trim(0)` every TRIM_SECONDS, which returns the free pages of every
  arena to the system. Why it is safe: it only releases memory that is free (whole free
  pages inside the heap, with madvise, and the heap's free top); it moves no live
  object and takes each arena's lock as malloc itself does, so it is safe with threads;
  pymalloc's own arenas are not touched (Python frees those itself). Its cost is a walk
  of the free lists, milliseconds for the operator's heap, twice a minute.

Both are glibc's: elsewhere (musl) they do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import resource
from typing import Any

import kopf

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2
TRIM_SECONDS = 30.0
_TASK: asyncio.Task[None] | None = None


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc
    return libc


def limit_arenas() -> bool:
    """At most ARENAS malloc arenas from now on; False where that is not glibc's."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, ARENAS))


def trim() -> bool:
    """Free heap pages back to the system; True when some were returned."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def _trim_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            before = _rss_mb()
            if trim():
                log.debug("heap trimmed: RSS %.0f -> %.0f MB", before, _rss_mb())
        except OSError as e:
            log.warning("heap not trimmed: %s", e)


@kopf.on.startup()
async def start_trimming(**_: Any) -> None:
    global _TASK
    _TASK = asyncio.create_task(_trim_every(TRIM_SECONDS), name="guestha-heap-trim")


@kopf.on.cleanup()
async def stop_trimming(**_: Any) -> None:
    if _TASK is not None:
        _TASK.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _TASK
