"""The two ways the operator's asyncio side reaches a member's agent, as
guestha.channel.transport's blocking ones do: Network (TCP to the VMI's address) and VSOCK
(KubeVirt's `virtualmachineinstances/NAME/vsock?port=P&tls=false` websocket through the
kube-apiserver). Each gives an `AsyncStream` with guestha's mutual TLS established inside
(guestha.channel.aio_tls: memory BIOs, for the memory of 1,500 connections), checked
against the member's name, so the asyncio client speaks HTTP/1.1 over either.

Errors are the blocking transports' ChannelErrors with the same stages: "connect" (no
address, refused, no route, the apiserver refused the websocket: its HTTP status in
`status`), "timeout", "tls". The websocket is aiohttp's (installed with kopf); one
`AsyncVsockTransport` holds one aiohttp session for all its members, which its owner
closes with `aclose()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Protocol

import aiohttp

from guestha.channel.aio_tls import CLOSE_SECONDS, READ_SIZE, AsyncTLSStream
from guestha.channel.transport import (
    PLAIN_PROTOCOL,
    ChannelError,
    KubeAccess,
    Member,
    describe_tls,
    status_message,
    vsock_url,
)
from guestha.protocol.constants import NETWORK, VSOCK


class AsyncStream(Protocol):
    """A connected, authenticated byte stream to an agent."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """Plaintext as it arrives; b"" when the agent closed the connection."""
        ...

    async def aclose(self) -> None:
        """Closes within a bounded time; never raises."""
        ...


class AsyncTransport(Protocol):
    """Opens streams to agents; `name` is the InGuestCluster's transport name."""

    name: str

    async def dial(self, member: Member, timeout: float) -> AsyncStream: ...


MAX_SALVAGE = 65536  # bytes read from a connection that failed (see _TcpPipe._salvage)


class _TcpPipe(asyncio.Protocol):
    """An asyncio TCP connection as an AsyncPipe.

    A protocol of its own rather than asyncio's StreamReader: a StreamReader whose
    connection was reset raises at once and drops the bytes it had received, and those are
    the agent's TLS alert that says why it refused the operator (it resets the connection
    right after sending it). Here received bytes are handed out first, the error after.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_SIZE and self._transport is not None:
            self._transport.pause_reading()  # the reader is behind: let TCP push back
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._salvage()
        self._eof = True
        self._error = exc
        self._wake_reader()
        self._wake_writer()

    def _salvage(self) -> None:
        """Takes what the kernel received but asyncio never read. A write that fails (the
        agent reset the connection) makes asyncio close the socket at once, unread: the
        agent's TLS alert may be there. The socket is still open while connection_lost
        runs; a duplicate of it reads without blocking."""
        raw = None if self._transport is None else self._transport.get_extra_info("socket")
        if raw is None:
            return
        with contextlib.suppress(OSError), raw.dup() as sock:
            sock.setblocking(False)
            while self._buffered < MAX_SALVAGE and (data := sock.recv(READ_SIZE)):
                self._chunks.append(data)
                self._buffered += len(data)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # AsyncPipe

    async def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise self._error or ConnectionResetError("the connection is closed")
        self._transport.write(data)
        while self._writable is not None:
            await self._writable
        if self._error is not None:
            raise self._error

    async def receive(self) -> bytes:
        while not self._chunks and not self._eof:
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        if self._chunks:
            data = self._chunks.popleft()
            self._buffered -= len(data)
            if self._transport is not None and self._buffered <= READ_SIZE:
                self._transport.resume_reading()
            return data
        if self._error is not None:
            raise self._error
        return b""

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()  # sends what is buffered, then closes: nothing to wait for


async def _handshake(
    member: Member, transport: str, stream: AsyncTLSStream, timeout: float, inside: str = ""
) -> AsyncTLSStream:
    """The TLS handshake within `timeout`; the stream closed and a ChannelError on failure."""
    try:
        async with asyncio.timeout(timeout):
            await stream.handshake()
        return stream
    except TimeoutError:
        await stream.aclose()
        raise ChannelError(
            member, transport, "timeout", f"the TLS handshake{inside} took over {timeout:g} s"
        ) from None
    except (ssl.SSLError, ConnectionError) as exc:
        await stream.aclose()
        raise ChannelError(member, transport, "tls", describe_tls(exc)) from None
    except OSError as exc:
        await stream.aclose()
        raise ChannelError(member, transport, "connect", f"TLS handshake: {exc}") from None
    except BaseException:
        await stream.aclose()
        raise


class AsyncNetworkTransport:
    """TCP to the VMI's address, then mutual TLS (the agent's certificate must name the
    member: `server_hostname` is the member's name)."""

    name = NETWORK

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    async def dial(self, member: Member, timeout: float) -> AsyncStream:
        if not member.address:
            raise ChannelError(
                member, self.name, "connect", "the VMI has no address in status.interfaces yet"
            )
        try:
            async with asyncio.timeout(timeout):
                _, pipe = await asyncio.get_running_loop().create_connection(
                    _TcpPipe, member.address, member.port)
        except TimeoutError:
            raise ChannelError(
                member, self.name, "timeout",
                f"connecting to {member.address}:{member.port} took over {timeout:g} s",
            ) from None
        except OSError as exc:
            raise ChannelError(
                member, self.name, "connect",
                f"cannot connect to {member.address}:{member.port}: {exc.strerror or exc}",
            ) from None
        stream = AsyncTLSStream(pipe, self.context, member.name)
        return await _handshake(member, self.name, stream, timeout)

    async def aclose(self) -> None:
        """Nothing to close (every stream is its client's); here to match the VSOCK one."""


class _WebSocketPipe:
    """An aiohttp websocket (binary messages) as an AsyncPipe."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_bytes(data)
        except aiohttp.ClientError as exc:
            raise ConnectionResetError(f"websocket: {exc}") from None

    async def receive(self) -> bytes:
        while True:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                if message.data:
                    return bytes(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                if message.data:
                    return str(message.data).encode()
            elif message.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionResetError(f"websocket: {self._ws.exception()}")
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                  aiohttp.WSMsgType.CLOSED):
                return b""

    async def aclose(self) -> None:
        # A close frame, and the apiserver's answer waited for CLOSE_SECONDS at most (the
        # session's ws_close timeout); cancelled, aiohttp drops the connection itself.
        with contextlib.suppress(OSError, TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._ws.close()


class AsyncVsockTransport:
    """KubeVirt's vsock websocket through the kube-apiserver (with the operator's own
    credentials and RBAC: `get` on `virtualmachineinstances/vsock`), then mutual TLS
    inside it, end to end with the agent."""

    name = VSOCK

    def __init__(self, access: KubeAccess, context: ssl.SSLContext) -> None:
        self.kube = access
        self.context = context
        self._session: aiohttp.ClientSession | None = None
        headers: dict[str, str] = {}
        for line in access.headers:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
        self._headers = headers

    def url(self, member: Member) -> str:
        return vsock_url(self.kube.server, member)

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection limit: each member's websocket holds its connection while open.
            connector = aiohttp.TCPConnector(limit=0, ssl=self.kube.context)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def aclose(self) -> None:
        """Closes the session and with it every websocket still open."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _refusal(self, member: Member, url: str, status: int, timeout: float) -> str:
        """The apiserver's words for a refused upgrade. aiohttp keeps no body of a refused
        upgrade, so the same GET is asked once more without it (authorisation answers
        alike: a websocket upgrade is a `get` of the subresource)."""
        fallback = f"HTTP {status}"
        try:
            async with (
                asyncio.timeout(timeout),
                self._open_session().get(url, headers=self._headers,
                                         proxy=self.kube.proxy) as answer,
            ):
                body = await answer.read()
                return status_message(body[:65536], fallback)
        except (OSError, TimeoutError, aiohttp.ClientError):
            return fallback

    async def dial(self, member: Member, timeout: float) -> AsyncStream:
        url = self.url(member)
        try:
            async with asyncio.timeout(timeout):
                ws = await self._open_session().ws_connect(
                    url,
                    protocols=(PLAIN_PROTOCOL,),
                    headers=self._headers,
                    proxy=self.kube.proxy,
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_SECONDS),
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status >= 400:
                words = await self._refusal(member, url, exc.status, timeout)
                message = f"the apiserver refused the vsock websocket ({exc.status}): {words}"
            else:
                message = f"the vsock websocket did not open ({exc.status}): {exc.message}"
            raise ChannelError(member, self.name, "connect", message, status=exc.status) from None
        except TimeoutError:
            raise ChannelError(
                member, self.name, "timeout", f"opening the vsock websocket took over {timeout:g} s"
            ) from None
        except (OSError, aiohttp.ClientError) as exc:
            raise ChannelError(
                member, self.name, "connect",
                f"cannot open the vsock websocket via {self.kube.server}: {exc}",
            ) from None
        pipe = _WebSocketPipe(ws)
        if ws.protocol not in (None, PLAIN_PROTOCOL):
            await pipe.aclose()
            raise ChannelError(
                member, self.name, "connect",
                f"the vsock websocket chose subprotocol {ws.protocol!r}, not {PLAIN_PROTOCOL}",
            )
        stream = AsyncTLSStream(pipe, self.context, member.name)
        return await _handshake(member, self.name, stream, timeout, " inside the websocket")
