"""The operator's asyncio client of one member's agent, for the per-cluster supervisor
that holds 1,500 members in one process without a thread each.

It is guestha.channel.client's AgentClient on an event loop: the same calls, framing and
typed answers (guestha.channel.calls, guestha.channel.framing), the same errors
(ChannelError naming member, transport and stage; AgentRefusal for the agent's own
refusals), one kept-alive connection opened on first use, and one resend when the agent
had closed a kept connection before a byte of the answer (safe for commands: each carries
an operation id the agent applies once). What differs:

- The operator's epoch is read for every request (`epoch` may be a callable, e.g. the
  leadership Elector's), sent in the Guestha-Epoch header of every request (its quorum
  vote at the agent) and in the body of every command.
- Requests from several tasks are taken one at a time on the one connection; the deadline
  of a request counts from its call, its wait for the connection included. A request that
  fails, runs out of time or is cancelled drops the connection (its state is unknown);
  the next request opens a new one.
- Closing (`aclose`) is bounded and never raises. With `idle_close`, a kept connection
  unused for that long is closed (the next request opens a new one): the operator's
  command connections, one per member, are idle nearly always, and 1,500 idle TLS
  connections cost some 50 MB.
- A request's deadline counts only the time the operator's own event loop ran on time
  (guestha.channel.looplag): while the loop was late, the answer may sit unread in the
  socket, so the deadline moves on by that much, up to looplag.STRETCH_MAX times the
  deadline; the request keeps its connection and reads the answer. Past that bound
  (or when connecting, which has a deadline of its own, timed out so) it fails with a
  ChannelError of stage "late", which no caller takes as evidence that the agent
  stopped answering.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from guestha.channel import calls, looplag
from guestha.channel.aio_transport import AsyncStream, AsyncTransport
from guestha.channel.calls import Call
from guestha.channel.framing import (
    AgentResponse,
    AnswerReader,
    Closed,
    FramingError,
    request_bytes,
)
from guestha.channel.transport import ChannelError, Member
from guestha.protocol.bundle import BundleInstalled, BundleUpload
from guestha.protocol.commands import ActionAccepted, ConfigApplied
from guestha.protocol.constants import EPOCH_HEADER
from guestha.protocol.desired import ConfigDocument, DesiredConfig
from guestha.protocol.events import EventBatch
from guestha.protocol.status import Health, StatusReport
from guestha.protocol.tls import TlsApplied, TlsUpdate

T = TypeVar("T")
Epoch = Callable[[], int] | int | None


class AsyncAgentClient:
    """HTTP/1.1 with JSON to one member's agent over an AsyncTransport."""

    def __init__(
        self,
        member: Member,
        transport: AsyncTransport,
        epoch: Epoch,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        idle_close: float | None = None,
    ) -> None:
        self.member = member
        self.transport = transport
        self.epoch = epoch  # an int, a callable giving it at each request, or None: no header
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        # seconds a kept connection may stay unused before it is closed (None: kept)
        self.idle_close = idle_close
        self._stream: AsyncStream | None = None
        self._reader = AnswerReader()
        self._fresh = False  # the open connection has carried no request yet
        self._lock = asyncio.Lock()
        self._used = 0.0  # the loop's time of the last request's end
        self._idle: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    def current_epoch(self) -> int | None:
        return self.epoch() if callable(self.epoch) else self.epoch

    def _error(self, stage: str, message: str) -> ChannelError:
        return ChannelError(self.member, self.transport.name, stage, message)

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def _connect(self) -> AsyncStream:
        if self._stream is None:
            self._stream = await self.transport.dial(self.member, self.connect_timeout)
            self._reader.clear()
            self._fresh = True
        return self._stream

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        self._reader.clear()
        if stream is not None:
            await stream.aclose()

    def _after_use(self) -> None:
        """A request ended: the connection is closed once unused for `idle_close`."""
        if self.idle_close is None or self._stream is None:
            return
        loop = asyncio.get_running_loop()
        self._used = loop.time()
        if self._idle is None:
            self._idle = loop.call_at(self._used + self.idle_close, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._stream is None or self.idle_close is None:
            return
        loop = asyncio.get_running_loop()
        due = self._used + self.idle_close
        if self._lock.locked() or loop.time() < due:
            # in use now, or used since: look again when it may be idle that long
            self._idle = loop.call_at(max(due, loop.time() + self.idle_close), self._check_idle)
            return
        self._closing = loop.create_task(self._close_idle())

    async def _close_idle(self) -> None:
        if not self._lock.locked():
            async with self._lock:
                await self._drop()

    async def aclose(self) -> None:
        """Closes the connection (waiting for a request in flight at most its deadline)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            async with asyncio.timeout(self.timeout), self._lock:
                await self._drop()
        except TimeoutError:
            await self._drop()

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- HTTP

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        epoch: int | None = None,
    ) -> AgentResponse:
        """One request and its answer, whatever its status; it carries `epoch` (else the
        client's) as the operator's epoch."""
        wait = self.timeout if timeout is None else timeout
        epoch = self.current_epoch() if epoch is None else epoch
        message = request_bytes(method, path, self.member.name, body,
                                None if epoch is None else (EPOCH_HEADER, epoch))
        what = f"{method} {path}"
        holding = False
        loop = asyncio.get_running_loop()
        lag = looplag.of_running_loop()
        started = loop.time()
        verdict: list[bool] = []  # the deadline's: whether the silence counted
        handle: asyncio.TimerHandle | None = None
        try:
            async with asyncio.timeout(None) as deadline:
                def check() -> None:
                    # the deadline counts only time the loop was on time (looplag): while
                    # it was late, the answer may be waiting unread; up to STRETCH_MAX
                    nonlocal handle
                    now = loop.time()
                    on_time = now - started - lag.late(started)
                    if on_time >= wait or now - started >= wait * looplag.STRETCH_MAX:
                        verdict.append(looplag.silence_counts(now - started,
                                                              lag.late(started), wait))
                        deadline.reschedule(now)
                    else:
                        handle = loop.call_at(now + wait - on_time, check)
                handle = loop.call_at(started + wait, check)
                async with self._lock:
                    holding = True
                    try:
                        answer = await self._send(message, what)
                    except BaseException:
                        await self._drop()  # failed, timed out or cancelled: state unknown
                        raise
                    self._after_use()
                    return answer
        except TimeoutError:
            if not holding:
                error = self._error(
                    "timeout", f"{what}: the connection stayed busy with other requests "
                    f"for {wait:g} s")
            else:
                error = self._error("timeout", f"{what}: no answer within {wait:g} s")
            if verdict and verdict[0]:
                raise error from None
            raise self._unless_late(error, lag, started, wait) from None
        except ChannelError as e:  # connecting (its own, shorter deadline) timed out
            raise self._unless_late(e, lag, started, self.connect_timeout) from None
        finally:
            if handle is not None:
                handle.cancel()

    def _unless_late(self, error: ChannelError, lag: looplag.LoopLag, started: float,
                     deadline: float) -> ChannelError:
        """`error` itself, or, for a timeout that the operator's late loop may have
        caused (looplag.silence_counts), an error of stage "late" saying so."""
        if error.stage != "timeout":
            return error
        waited = asyncio.get_running_loop().time() - started
        late = lag.late(started)
        if looplag.silence_counts(waited, late, deadline):
            return error
        return ChannelError(error.member, error.transport, looplag.LATE,
                            f"{error.args[0].split(': ', 1)[-1]}, but the operator's event "
                            f"loop was late for {late:.2f} s of those {waited:.2f} s: no "
                            "evidence that the agent stopped answering")

    async def _send(self, message: bytes, what: str) -> AgentResponse:
        for attempt in (1, 2):
            reused = self._stream is not None and not self._fresh
            stream = await self._connect()
            try:
                return await self._exchange(stream, message)
            except Closed as closed:
                await self._drop()
                if attempt == 1 and reused and closed.early:
                    continue  # the agent closed an idle kept-alive connection: once more
                raise self._error(
                    "closed", f"{what}: the agent closed the connection before answering"
                ) from None
            except FramingError as exc:
                raise self._error("http", str(exc)) from None
            except ssl.SSLError as exc:
                raise self._error(
                    "tls", f"{what}: TLS failed (the agent refused the operator's "
                    f"certificate?): {exc}") from None
            except (BrokenPipeError, ConnectionResetError) as exc:
                await self._drop()
                if attempt == 1 and reused:
                    continue
                raise self._error("closed", f"{what}: {exc}") from None
            except OSError as exc:
                raise self._error("closed", f"{what}: {exc}") from None
        raise AssertionError("unreachable")

    async def _exchange(self, stream: AsyncStream, message: bytes) -> AgentResponse:
        self._fresh = False
        await stream.send(message)
        while (response := self._reader.next()) is None:
            chunk = await stream.receive()
            if not chunk:
                raise Closed(early=not self._reader.started)
            self._reader.feed(chunk)
        if response.closes:
            await self._drop()
        return response

    # -- the agent's API (docs/agent-api.md)

    async def call(self, call: Call[T]) -> T:
        """One call of guestha.channel.calls, its answer typed."""
        response = await self.request(call.method, call.path, call.body,
                                      call.deadline(self.timeout), call.epoch)
        return calls.answer(call, response, self.member, self.transport.name)

    def _command_epoch(self) -> int:
        epoch = self.current_epoch()
        if epoch is None:
            raise ValueError(f"a command to the agent of {self.member} needs the operator's "
                             "epoch: this client has none")
        return epoch

    async def status(self) -> StatusReport:
        """GET /v1/status: the agent's whole state."""
        return await self.call(calls.status())

    async def healthz(self) -> Health:
        return await self.call(calls.healthz())

    async def get_config(self) -> ConfigDocument:
        """GET /v1/config: the configuration last put, and its epoch."""
        return await self.call(calls.get_config())

    async def put_config(
        self, config: DesiredConfig, operation_id: str | None = None
    ) -> ConfigApplied:
        """PUT /v1/config: the whole desired configuration, under the operator's current
        epoch and an operation id (new unless given: give the same one to a retry)."""
        return await self.call(calls.put_config(self._command_epoch(), config, operation_id))

    async def put_bundle(
        self, upload: BundleUpload, operation_id: str | None = None
    ) -> BundleInstalled:
        """PUT /v1/bundle under the operator's current epoch: the agent checks the
        bundle, answers, and restarts into it (guestha.agent.bundles)."""
        return await self.call(calls.put_bundle(self._command_epoch(), upload, operation_id))
    async def put_tls(self, update: TlsUpdate, operation_id: str | None = None) -> TlsApplied:
        """PUT /v1/tls: a new serving certificate for the agent, under the operator's
        current epoch."""
        return await self.call(calls.put_tls(self._command_epoch(), update, operation_id))

    async def group_action(
        self, group: str, action: str, operation_id: str | None = None, reason: str | None = None
    ) -> ActionAccepted:
        """POST /v1/groups/GROUP/ACTION (online, offline, clear, probe) under the operator's
        current epoch: queued on the group's worker; progress arrives as events."""
        return await self.call(
            calls.group_action(group, action, self._command_epoch(), operation_id, reason))

    async def events(
        self, after: int, timeout: float, stream: str | None = None, limit: int | None = None
    ) -> EventBatch:
        """GET /v1/events: the events after `after`, waiting up to `timeout` seconds for
        one (the request's own deadline is that plus calls.LONG_POLL_MARGIN). A 410
        (events gone, or another agent run) raises AgentRefusal (its `gone` says where the
        stream stands): read /v1/status and start again from its `events`."""
        return await self.call(calls.events(after, timeout, stream, limit))
