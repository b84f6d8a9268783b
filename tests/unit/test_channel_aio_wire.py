"""The operator's asyncio client against servers of the test's own, which misbehave on
purpose: no answer, half an answer, garbage, a broken contract, a kept connection closed
while idle, a certificate of another name, nobody listening. Each ends in a ChannelError of
the stage that says what happened (never a hang: every request has its deadline), or in
the one resend the client owes a kept connection the agent closed. Plus the pure parts the
blocking and asyncio clients share: the framing of answers, and the follower's delay.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from guestha.channel.aio import (
    AsyncAgentClient,
    AsyncNetworkTransport,
    ChannelError,
    Member,
    backoff_delay,
    retry_delay,
)
from guestha.channel.framing import MAX_HEAD, AnswerReader, FramingError, request_bytes
from guestha.channel.transport import operator_context
from kits.pki import Pki

pytestmark = pytest.mark.unit
T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
STATUS_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def run(coro: Coroutine[Any, Any, T], limit: float = 30.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(limit):  # a hung test fails here, not at pytest's timeout
            return await coro
    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def server_context(pki: Pki, name: str = "web-a") -> ssl.SSLContext:
    cert, key = pki.agent_cert(name, "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(pki.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Scripted:
    """A TLS server on 127.0.0.1 that runs `handler` for each connection it accepts."""

    def __init__(self, pki: Pki, handler: Handler, name: str = "web-a") -> None:
        self.pki, self.handler, self.name = pki, handler, name
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Scripted:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0,
                                                 ssl=server_context(self.pki, self.name))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def client(self, timeout: float = 1.0) -> AsyncAgentClient:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        context = operator_context(self.pki.ca_file, *self.pki.operator)
        return AsyncAgentClient(Member("tests", "web-a", port, "127.0.0.1"),
                                AsyncNetworkTransport(context), 7, timeout)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers


def answer(body: Any, extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return STATUS_HEAD + extra + b"Content-Length: %d\r\n\r\n" % len(data) + data


HEALTH = {"status": "ok", "member": "web-a", "agentVersion": "v", "selfFence": "Idle",
          "watchdogPetting": False}


async def failure(server: Scripted, timeout: float = 1.0, dropped: bool = True
                  ) -> ChannelError:
    """The error of a healthz to `server`; `dropped`: the connection must be gone after it
    (an answer framed right but wrong in content leaves it usable)."""
    async with server, server.client(timeout) as c:
        with pytest.raises(ChannelError) as failed:
            await c.healthz()
        assert c.connected is not dropped
        return failed.value


# --- servers that misbehave --------------------------------------------------------------
def test_a_server_that_never_answers_is_a_timeout(pki: Pki) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(60)
    error = run(failure(Scripted(pki, silent), timeout=0.5))
    assert error.stage == "timeout" and "no answer within 0.5 s" in str(error)
    assert "GET /v1/healthz" in str(error) and "tests/web-a" in str(error)


def test_half_an_answer_then_silence_is_a_timeout(pki: Pki) -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STATUS_HEAD + b"Content-Length: 100\r\n\r\n{\"status\": ")
        await writer.drain()
        await asyncio.sleep(60)
    assert run(failure(Scripted(pki, stalls), timeout=0.5)).stage == "timeout"


@pytest.mark.parametrize(("reply", "words"), [
    (b"garbage\r\n\r\n", "not an HTTP/1.1 status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", "valid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnot j", "not JSON"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"x" * (MAX_HEAD + 10), f"over {MAX_HEAD} bytes"),
])
def test_a_broken_answer_is_an_http_error(pki: Pki, reply: bytes, words: str) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(60)
    error = run(failure(Scripted(pki, garbage)))
    assert error.stage == "http" and words in str(error), error


def test_an_answer_that_breaks_the_contract_names_the_field(pki: Pki) -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer({**HEALTH, "watchdogPetting": "yes"}))
        await writer.drain()
        await asyncio.sleep(60)
    error = run(failure(Scripted(pki, wrong), dropped=False))
    assert error.stage == "protocol" and "watchdogPetting" in str(error), error


def test_a_closed_kept_connection_is_reopened_and_the_request_sent_once_more(
        pki: Pki) -> None:
    """The agent closes an idle kept-alive connection: the next request goes out again on
    a new one, once."""
    seen: list[str] = []

    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers = await read_request(reader)
        seen.append(f"{line} epoch={headers.get('guestha-epoch')}")
        writer.write(answer(HEALTH))
        await writer.drain()  # then closed: as the agent's idle limit does

    async def scenario() -> int:
        async with Scripted(pki, one_each) as server, server.client() as c:
            await c.healthz()
            await asyncio.sleep(0.1)  # the close has arrived
            health = await c.healthz()
            assert health.member == "web-a"
            return server.connections
    assert run(scenario()) == 2
    assert seen == ["GET /v1/healthz HTTP/1.1 epoch=7"] * 2


def test_a_connection_closed_mid_answer_is_not_sent_again(pki: Pki) -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(HEALTH))
        await read_request(reader)
        writer.write(STATUS_HEAD + b"Content-Length: 100\r\n\r\n{")
        await writer.drain()

    async def scenario() -> tuple[ChannelError, int]:
        async with Scripted(pki, breaks) as server, server.client() as c:
            await c.healthz()
            with pytest.raises(ChannelError) as failed:
                await c.healthz()
            return failed.value, server.connections
    error, connections = run(scenario())
    assert error.stage == "closed" and "before answering" in str(error)
    assert connections == 1


def test_an_agent_certificate_of_another_member_is_refused(pki: Pki) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
    error = run(failure(Scripted(pki, never, name="web-z")))
    assert error.stage == "tls" and "certificate was not accepted" in str(error), error


def test_nobody_listening_and_no_address_are_connect_errors(pki: Pki) -> None:
    context = operator_context(pki.ca_file, *pki.operator)

    async def scenario(address: str | None) -> ChannelError:
        member = Member("tests", "web-a", 9, address)  # discard: nobody listens
        async with AsyncAgentClient(member, AsyncNetworkTransport(context), 1, 2.0) as c:
            with pytest.raises(ChannelError) as failed:
                await c.status()
            return failed.value
    refused = run(scenario("127.0.0.1"))
    assert refused.stage == "connect" and "cannot connect to 127.0.0.1:9" in str(refused)
    missing = run(scenario(None))
    assert missing.stage == "connect" and "no address" in str(missing)


def test_a_request_behind_a_busy_connection_keeps_its_own_deadline(pki: Pki) -> None:
    """A long-poll holds the connection; a status asked meanwhile waits at most its own
    deadline, says so, and leaves the long-poll's connection alone."""
    async def slow_then_quick(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        while True:
            line, _ = await read_request(reader)
            if "/v1/events" in line:
                await asyncio.sleep(1.0)
                writer.write(answer({"stream": "s", "lastSeq": 0, "more": False, "events": []}))
            else:
                writer.write(answer(HEALTH))
            await writer.drain()

    async def scenario() -> None:
        async with Scripted(pki, slow_then_quick) as server, server.client(timeout=0.3) as c:
            poll = asyncio.create_task(c.events(0, 1.0))
            await asyncio.sleep(0.1)
            with pytest.raises(ChannelError) as failed:
                await c.healthz()
            assert failed.value.stage == "timeout"
            assert "busy with other requests" in str(failed.value)
            batch = await poll
            assert batch.stream == "s" and c.connected
            assert (await c.healthz()).member == "web-a"
            assert server.connections == 1
    run(scenario())


# --- the pure parts --------------------------------------------------------------------
def test_the_answer_reader_takes_answers_split_anyhow_and_back_to_back() -> None:
    one = answer({"a": 1})
    two = answer({"b": 2}, b"Connection: close\r\n")
    reader = AnswerReader()
    got = []
    for i in range(len(one + two)):  # a byte at a time
        reader.feed((one + two)[i:i + 1])
        while (response := reader.next()) is not None:
            got.append(response)
    assert [r.body for r in got] == [{"a": 1}, {"b": 2}]
    assert [r.closes for r in got] == [False, True]
    assert not reader.started
    reader.feed(b"HTTP/1.1 200")
    assert reader.next() is None and reader.started


def test_a_request_carries_the_member_the_epoch_and_its_length() -> None:
    data = request_bytes("PUT", "/v1/config", "web-a", {"x": 1}, ("Guestha-Epoch", 4))
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b'{"x":1}'
    assert head.split(b"\r\n") == [
        b"PUT /v1/config HTTP/1.1", b"Host: web-a", b"Accept: application/json",
        b"Connection: keep-alive", b"Content-Length: 7", b"Content-Type: application/json",
        b"Guestha-Epoch: 4"]
    assert b"Guestha-Epoch" not in request_bytes("GET", "/v1/status", "web-a")


def test_the_framing_refuses_a_body_over_the_limit() -> None:
    reader = AnswerReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n")
    with pytest.raises(FramingError, match="is over"):
        reader.next()


@pytest.mark.parametrize(("failures", "jitter", "delay"), [
    (0, 0.5, 0.0),       # no failure: no wait
    (1, 1.0, 0.2),       # the first retry: `initial`, jittered into its upper half
    (1, 0.0, 0.1),
    (2, 1.0, 0.4),       # doubling
    (3, 1.0, 0.8),
    (7, 1.0, 10.0),      # capped at `maximum`
    (7, 0.0, 5.0),
    (10_000, 1.0, 10.0),  # no overflow, however long the outage
    (1, 7.0, 0.2),       # jitter out of range is clamped
    (1, -1.0, 0.1),
])
def test_the_retry_delay_doubles_is_capped_and_jittered(
        failures: int, jitter: float, delay: float) -> None:
    assert backoff_delay(failures, 0.2, 10.0, jitter) == pytest.approx(delay)


@pytest.mark.parametrize(("failures", "jitter", "expected", "delay"), [
    (1, 1.0, True, 0.2),    # below the quick retry already: as it is
    (2, 1.0, True, 0.25),   # an agent restarting on purpose is retried every 0.25 s
    (7, 1.0, True, 0.25),   # ... however long it takes
    (7, 1.0, False, 10.0),  # otherwise the backoff
    (0, 1.0, True, 0.0),
])
def test_a_member_expected_to_restart_is_retried_quickly(
        failures: int, jitter: float, expected: bool, delay: float) -> None:
    assert retry_delay(failures, 0.2, 10.0, jitter, expected) == pytest.approx(delay)
