"""The two ways the operator reaches a member's agent: over the network, or over VSOCK.

Both give the same thing, a connected stream with guestha's mutual TLS already
established (the agent proved it holds a certificate of the cluster CA naming the member,
the operator presented its own), so guestha.channel.client speaks HTTP/1.1 over either
without knowing which one it has (InGuestCluster `spec.channel.transport`):

- `NetworkTransport`: TCP to the VMI's address (`status.interfaces`) at the cluster's
  channel port. Needs a route from the operator's pod to the guest network.
- `VsockTransport`: KubeVirt's `virtualmachineinstances/NAME/vsock` subresource, a
  websocket (subprotocol `plain.kubevirt.io`, binary frames) that the kube-apiserver
  proxies to virt-api and virt-handler, which connects to the guest's vsock port. No
  guest network is needed, and what may open it is Kubernetes RBAC (`get` on
  `virtualmachineinstances/vsock` in `subresources.kubevirt.io`). The operator
  authenticates to the apiserver with its own credentials (kubevirt/kubeconfig.py:
  kubeconfig or in-cluster token, handed over by the controller as a KubeAccess).
  `tls=false` asks virt-handler for a plain byte stream: guestha's own mutual TLS runs
  inside it end to end (guestha.channel.tlsstream), so neither the apiserver nor
  KubeVirt can read or forge a command. The websocket is websocket-client's,
  which does masking, fragmentation, ping/pong and the close handshake.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import websocket

from guestha.channel.tlsstream import TLSStream
from guestha.protocol.constants import AGENT_PORT, NETWORK, VSOCK

PLAIN_PROTOCOL = "plain.kubevirt.io"
SUBRESOURCES = "/apis/subresources.kubevirt.io/v1"


class ChannelError(Exception):
    """The channel to one member's agent failed; the message names member and transport.

    `stage` says where: "connect" (no route, refused, the apiserver refused the websocket:
    `status` is its HTTP status then), "tls" (the agent and the operator did not accept
    each other), "timeout", "http" (a broken answer), "closed" (the agent hung up),
    "protocol" (an answer that breaks guestha.protocol's contract: the message names the
    field), "late" (a deadline passed while the operator's own event loop was late, the
    asyncio client only: no evidence against the agent, guestha.channel.looplag).
    """

    def __init__(
        self, member: Member, transport: str, stage: str, message: str, status: int | None = None
    ) -> None:
        super().__init__(f"agent of {member} over {transport}: {message}")
        self.member = member
        self.transport = transport
        self.stage = stage
        self.status = status


@dataclass(frozen=True)
class Member:
    """One member VM's agent as the channel addresses it."""

    namespace: str
    name: str  # the VM's name, which is its VMI's name and the agent certificate's name
    port: int = AGENT_PORT
    address: str | None = None  # Network only: the VMI's address

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_vmi(cls, vmi: Mapping[str, Any], port: int = AGENT_PORT) -> Member:
        """A member from its VMI: the first interface address of `status.interfaces`."""
        meta = vmi.get("metadata") or {}
        address = None
        for iface in (vmi.get("status") or {}).get("interfaces") or ():
            if iface.get("ipAddress"):
                address = str(iface["ipAddress"])
                break
        return cls(str(meta["namespace"]), str(meta["name"]), port, address)


def operator_context(ca: Path | str, cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """The operator's TLS context for a cluster: trusts only the cluster CA, presents the
    operator's client certificate, and checks that the agent's certificate names the member."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Stream(Protocol):
    """A connected, authenticated byte stream to an agent (ssl.SSLSocket or TLSStream)."""

    def sendall(self, data: bytes, /) -> Any: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    """Opens streams to agents; `name` is the InGuestCluster's transport name."""

    name: str

    def dial(self, member: Member, timeout: float) -> Stream: ...


def describe_tls(exc: BaseException) -> str:
    """Why a TLS handshake with an agent failed, in words for the ChannelError."""
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the agent's certificate was not accepted: {exc.verify_message or text}"
    return f"TLS handshake failed (the agent refused the operator's certificate?): {text}"


class NetworkTransport:
    """TCP to the VMI's address, then mutual TLS."""

    name = NETWORK

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def dial(self, member: Member, timeout: float) -> Stream:
        if not member.address:
            raise ChannelError(
                member, self.name, "connect", "the VMI has no address in status.interfaces yet"
            )
        try:
            raw = socket.create_connection((member.address, member.port), timeout=timeout)
        except TimeoutError:
            raise ChannelError(
                member,
                self.name,
                "timeout",
                f"connecting to {member.address}:{member.port} took over {timeout:g} s",
            ) from None
        except OSError as exc:
            raise ChannelError(
                member,
                self.name,
                "connect",
                f"cannot connect to {member.address}:{member.port}: {exc.strerror or exc}",
            ) from None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(timeout)
            tls = self.context.wrap_socket(raw, server_hostname=member.name)
        except TimeoutError:
            raw.close()
            raise ChannelError(
                member, self.name, "timeout", f"the TLS handshake took over {timeout:g} s"
            ) from None
        except (ssl.SSLError, ConnectionError) as exc:
            raw.close()
            raise ChannelError(member, self.name, "tls", describe_tls(exc)) from None
        except OSError as exc:
            raw.close()
            raise ChannelError(member, self.name, "connect", f"TLS handshake: {exc}") from None
        return tls


@dataclass(frozen=True)
class KubeAccess:
    """What the websocket needs of the operator's Kubernetes credentials."""

    server: str  # https://host:port[/prefix]
    context: ssl.SSLContext
    headers: tuple[str, ...]  # e.g. "Authorization: Bearer ..."
    proxy: str | None = None

    @classmethod
    def from_credentials(cls, server: str, context: ssl.SSLContext,
                         headers: Mapping[str, str], proxy: str | None = None) -> KubeAccess:
        """From the operator's credentials (kubevirt/kubeconfig.py: in-cluster or
        kubeconfig): its server, TLS context (CA, client certificate), request headers as
        they are now (the bearer token) and proxy."""
        return cls(server.rstrip("/"), context,
                   tuple(f"{key}: {value}" for key, value in headers.items()), proxy or None)


def vsock_url(server: str, member: Member) -> str:
    """The websocket URL of a member's vsock port through the apiserver at `server`:
    KubeVirt's subresource with `tls=false` (guestha's own TLS runs inside)."""
    base = urlsplit(server)
    scheme = "wss" if base.scheme == "https" else "ws"
    path = (
        f"{base.path.rstrip('/')}{SUBRESOURCES}/namespaces/{quote(member.namespace)}"
        f"/virtualmachineinstances/{quote(member.name)}/vsock"
    )
    query = urlencode({"port": member.port, "tls": "false"})
    return f"{scheme}://{base.netloc}{path}?{query}"


def status_message(body: bytes | str, fallback: str) -> str:
    """The apiserver's (or virt-api's) own words: the `message` of its Status body."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        message = json.loads(text).get("message")
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    return text.strip()[:300] or fallback


class _WebSocketPipe:
    """websocket-client's WebSocket as a MessagePipe for TLSStream."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws

    def send(self, data: bytes) -> None:
        try:
            self.ws.send_binary(data)
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError(str(exc)) from None
        except websocket.WebSocketException as exc:
            raise ConnectionError(f"websocket: {exc}") from None

    def receive(self) -> bytes:
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return b""
                if data:
                    return bytes(data)
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError(str(exc)) from None
        except websocket.WebSocketConnectionClosedException:
            return b""
        except websocket.WebSocketException as exc:
            raise ConnectionError(f"websocket: {exc}") from None

    def settimeout(self, timeout: float | None) -> None:
        self.ws.settimeout(timeout)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1.0)
        except (OSError, websocket.WebSocketException):
            self.ws.shutdown()  # type: ignore[no-untyped-call]


def _status_message(exc: websocket.WebSocketBadStatusException) -> str:
    return status_message(exc.resp_body or b"", str(exc))


class VsockTransport:
    """KubeVirt's vsock websocket through the kube-apiserver, then mutual TLS inside it."""

    name = VSOCK

    def __init__(self, context: ssl.SSLContext, kube: KubeAccess) -> None:
        self.context = context
        self.kube = kube

    def url(self, member: Member) -> str:
        return vsock_url(self.kube.server, member)

    def _proxy_options(self) -> dict[str, Any]:
        if not self.kube.proxy:
            # no proxy unless the kubeconfig names one (proxy-url), as kubectl
            return {"http_no_proxy": ["*"]}
        proxy = urlsplit(self.kube.proxy)
        return {
            "http_proxy_host": proxy.hostname,
            "http_proxy_port": proxy.port or 80,
            "proxy_type": "http",
        }

    def dial(self, member: Member, timeout: float) -> Stream:
        try:
            ws = websocket.create_connection(
                self.url(member),
                timeout=timeout,
                subprotocols=[PLAIN_PROTOCOL],
                header=list(self.kube.headers),
                sslopt={"context": self.kube.context},
                enable_multithread=False,
                **self._proxy_options(),
            )
        except websocket.WebSocketBadStatusException as exc:
            raise ChannelError(
                member,
                self.name,
                "connect",
                f"the apiserver refused the vsock websocket "
                f"({exc.status_code}): {_status_message(exc)}",
                status=exc.status_code,
            ) from None
        except (websocket.WebSocketTimeoutException, TimeoutError):
            raise ChannelError(
                member, self.name, "timeout", f"opening the vsock websocket took over {timeout:g} s"
            ) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ChannelError(
                member,
                self.name,
                "connect",
                f"cannot open the vsock websocket via {self.kube.server}: {exc}",
            ) from None
        chosen = ws.getsubprotocol()
        if chosen not in (None, PLAIN_PROTOCOL):
            ws.shutdown()  # type: ignore[no-untyped-call]
            raise ChannelError(
                member,
                self.name,
                "connect",
                f"the vsock websocket chose subprotocol {chosen!r}, not {PLAIN_PROTOCOL}",
            )
        stream = TLSStream(_WebSocketPipe(ws), self.context, server_hostname=member.name)
        try:
            stream.settimeout(timeout)
            stream.handshake()
        except TimeoutError:
            stream.close()
            raise ChannelError(
                member,
                self.name,
                "timeout",
                f"the TLS handshake inside the websocket took over {timeout:g} s",
            ) from None
        except (ssl.SSLError, ConnectionError) as exc:
            stream.close()
            raise ChannelError(member, self.name, "tls", describe_tls(exc)) from None
        return stream
