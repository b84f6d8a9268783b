"""Following the event streams of many agents from one event loop: one task per member.

A fault reaches the operator when the agent pushes it, not at the next poll: each member's
task long-polls GET /v1/events (after the last seq it delivered, in the stream it knows)
and hands every non-empty batch to `on_events(member, batch, None)`, in order, one
batch at a time (the next poll waits for the callback). The rules of docs/agent-api.md
("Resynchronising") are kept here, once:

- A task starts with GET /v1/status and hands the whole state to
  `on_events(member, None, status)`; the stream and last seq in it are where polling
  starts. It does this again whenever the agent answers 410 EventsGone (it restarted: a
  new stream; or the events asked for fell out of its ring) and after a callback failed,
  so the consumer rebuilds its view from a full state and misses nothing.
- Any failure of the channel (ChannelError) drops the client; after a delay a new one
  comes from `client_factory(member)` (so an address that changed is picked up) and the
  poll resumes from the same place (a restarted agent answers 410: resync). The delay is
  `backoff_delay`: exponential from `initial`, at most `maximum`, jittered, a pure
  function tested with tables.
- Reachability: after every answer of the agent (a refusal is an answer too) the member
  is reachable and `last_contact` is the follower clock's time then; after a failed
  exchange it is unreachable. `on_contact(member, Contact)` is called when reachability
  changes (and the first time it is known), `contact(member)` reads it at any time. A
  long-poll answers at least every `poll_seconds` (plus the round trip), so while a
  member is reachable, `last_contact` is at most that old; an agent that hangs with its
  connection open is found unreachable when the poll's deadline passes (`poll_seconds +
  calls.LONG_POLL_MARGIN`): choose `poll_seconds` for how soon that must be known. A
  deadline that passed while the operator's own loop was late (ChannelError stage
  "late", guestha.channel.looplag) is no failure of the agent: the member stays as it
  was (reachable, its last contact kept) and is asked again after the shortest delay.
- A member whose agent restarts on purpose (an upgrade: controller.rollout) is announced
  with `expect_restart(member, within)`: for that long its retries come every
  QUICK_RETRY_SECONDS instead of backing off, so its new run is followed as soon as it
  answers, not up to twice its restart later (`retry_delay`, a pure function too).
- Every wait is bounded: each request by its deadline, each callback by
  `callback_timeout` (a callback that takes longer is cancelled, logged and counted as a
  failure: resync after the delay), each delay by `maximum`. `unfollow` and `aclose`
  cancel the tasks and wait for them, their clients closed: nothing is left running.

Callbacks run in the member's task; one that raises is logged (with its traceback) and
the member resyncs after the delay. The clock is injectable (default time.monotonic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from guestha.channel import looplag
from guestha.channel.aio_client import AsyncAgentClient
from guestha.channel.calls import AgentRefusal
from guestha.channel.transport import ChannelError
from guestha.protocol.events import EventBatch
from guestha.protocol.status import StatusReport

log = logging.getLogger(__name__)

# Below half the agent's default operator lease (15 s): the poll loop alone, carrying the
# epoch header, keeps the operator's quorum vote at the agent (the agent clamps the wait
# to half its lease anyway).
POLL_SECONDS = 5.0
STOP_SECONDS = 5.0  # the longest unfollow/aclose wait for a task (closing is bounded too)
QUICK_RETRY_SECONDS = 0.25  # retries of a member expected to restart (expect_restart)

OnEvents = Callable[[str, EventBatch | None, StatusReport | None], Awaitable[None]]
OnContact = Callable[[str, "Contact"], Awaitable[None]]


@dataclass(frozen=True)
class FollowSettings:
    poll_seconds: float = POLL_SECONDS  # the wait asked of each long-poll
    limit: int | None = None  # events per answer (None: the agent's default, 500)
    backoff_initial: float = 0.2  # seconds before the first retry after a failure
    backoff_maximum: float = 10.0  # the longest delay between retries
    callback_timeout: float = 30.0  # the longest on_events/on_contact may take

    def __post_init__(self) -> None:
        for name in ("poll_seconds", "backoff_initial", "backoff_maximum", "callback_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.backoff_maximum < self.backoff_initial:
            raise ValueError(f"backoff_maximum: must be at least backoff_initial "
                             f"({self.backoff_initial}), got {self.backoff_maximum}")


@dataclass(frozen=True)
class Contact:
    """Whether a member's agent answers, as its follower last found out."""

    reachable: bool
    last_contact: float | None  # the clock's time of the agent's last answer (None: never)
    error: str | None = None  # the failure that made it unreachable


def backoff_delay(failures: int, initial: float, maximum: float, jitter: float) -> float:
    """Seconds to wait after `failures` failures in a row (1 or more): `initial` doubled
    per failure, capped at `maximum`, then scaled into its upper half by `jitter` (0 to 1,
    random: members that failed together retry apart)."""
    if failures < 1:
        return 0.0
    base = min(maximum, initial * 2.0 ** min(failures - 1, 64))
    return base * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def retry_delay(failures: int, initial: float, maximum: float, jitter: float,
                restart_expected: bool) -> float:
    """The delay before a retry: `backoff_delay`, at most QUICK_RETRY_SECONDS while the
    member's agent is expected to come back from a restart."""
    delay = backoff_delay(failures, initial, maximum, jitter)
    return min(delay, QUICK_RETRY_SECONDS) if restart_expected else delay


class _CallbackFailed(Exception):
    pass


class EventFollower:
    """The event streams of a set of members, one asyncio task each (see the module)."""

    def __init__(
        self,
        client_factory: Callable[[str], AsyncAgentClient],
        on_events: OnEvents,
        on_contact: OnContact | None = None,
        settings: FollowSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._factory = client_factory
        self._on_events = on_events
        self._on_contact = on_contact
        self.settings = settings or FollowSettings()
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._contacts: dict[str, Contact] = {}
        self._restarting: dict[str, float] = {}  # member -> until when (clock) it may be

    # -- the set of members

    @property
    def members(self) -> frozenset[str]:
        return frozenset(self._tasks)

    def follow(self, member: str) -> None:
        """Starts following `member` (a no-op when it is followed already)."""
        task = self._tasks.get(member)
        if task is not None and not task.done():
            return
        self._tasks[member] = asyncio.get_running_loop().create_task(
            self._follow(member), name=f"guestha-follow-{member}")

    async def unfollow(self, member: str) -> None:
        """Stops following `member` and waits for its task to end."""
        task = self._tasks.pop(member, None)
        self._contacts.pop(member, None)
        self._restarting.pop(member, None)
        if task is not None:
            await _stop([task])

    async def aclose(self) -> None:
        """Stops every member's task and waits for them (their clients closed)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        self._contacts.clear()
        await _stop(tasks)

    async def __aenter__(self) -> EventFollower:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def expect_restart(self, member: str, within: float) -> None:
        """`member`'s agent restarts on purpose: for `within` seconds, retry it every
        QUICK_RETRY_SECONDS instead of backing off."""
        self._restarting[member] = self._clock() + within

    def contact(self, member: str) -> Contact | None:
        """Whether `member` answers and when it last did (None: not known yet)."""
        return self._contacts.get(member)

    # -- one member

    async def _callback(self, what: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self.settings.callback_timeout):
                await what
        except Exception as exc:
            raise _CallbackFailed(str(exc) or type(exc).__name__) from exc

    async def _reached(self, member: str, error: str | None = None) -> None:
        """Records an answer (error None) or a failure; tells on_contact of a change."""
        before = self._contacts.get(member)
        if error is None:
            now = Contact(True, self._clock())
        else:
            now = Contact(False, before.last_contact if before else None, error)
        self._contacts[member] = now
        if self._on_contact is not None and (before is None or before.reachable != now.reachable):
            try:
                await self._callback(self._on_contact(member, now))
            except _CallbackFailed:
                log.exception("on_contact for member %s failed", member)

    async def _pause(self, member: str, failures: int) -> None:
        s = self.settings
        expected = self._clock() < self._restarting.get(member, float("-inf"))
        await asyncio.sleep(retry_delay(failures, s.backoff_initial, s.backoff_maximum,
                                        self._rng.random(), expected))

    async def _follow(self, member: str) -> None:
        s = self.settings
        client: AsyncAgentClient | None = None
        stream: str | None = None  # None: resync by status first
        after = 0
        failures = 0  # in a row, for the delay
        try:
            while True:
                try:
                    if client is None:
                        client = self._factory(member)
                    if stream is None:
                        status = await client.status()
                        await self._reached(member)
                        stream, after = status.events.stream, status.events.last_seq
                        await self._callback(self._on_events(member, None, status))
                    batch = await client.events(after, s.poll_seconds, stream, s.limit)
                    await self._reached(member)
                    failures = 0
                    if batch.stream != stream:  # another run answered: start from its state
                        stream = None
                        continue
                    if batch.events:
                        after = batch.events[-1].seq
                        await self._callback(self._on_events(member, batch, None))
                except AgentRefusal as refusal:
                    await self._reached(member)
                    failures += 1
                    if refusal.gone is not None:
                        stream = None  # another run, or events lost: resync from status
                        if failures == 1:
                            continue  # at once the first time; a second in a row waits
                    else:
                        log.warning("%s", refusal)
                    await self._pause(member, failures)
                except ChannelError as exc:
                    old, client = client, None
                    if old is not None:
                        await old.aclose()
                    if exc.stage == looplag.LATE:
                        # the operator's loop, not the agent, missed the deadline: the
                        # member stays as it was; ask again after the shortest delay
                        log.info("%s", exc)
                        await self._pause(member, 1)
                        continue
                    failures += 1
                    await self._reached(member, str(exc))
                    await self._pause(member, failures)
                except _CallbackFailed:
                    log.exception("on_events for member %s failed; resynchronising", member)
                    failures += 1
                    stream = None
                    await self._pause(member, failures)
        finally:
            if client is not None:
                await client.aclose()


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=STOP_SECONDS)
    for task in done:
        with contextlib.suppress(asyncio.CancelledError):
            exc = task.exception()
            if exc is not None:
                log.error("follower task %s ended with %r", task.get_name(), exc)
    for task in pending:  # closing is bounded, so this is a bug: say so
        log.error("follower task %s did not stop within %g s", task.get_name(), STOP_SECONDS)
