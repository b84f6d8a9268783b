"""Open a stream to a port inside a guest host, as virt-handler dials a guest's VSOCK port.

A real guest is reached over AF_VSOCK (context id + port), a channel between the hypervisor
and the guest that needs no network. The simulator's stand-in: a TCP connection made from
*inside* the guest's network namespace to its loopback (then to its own address), so a
service the guest binds to 127.0.0.1 only - invisible on the guest network - is reachable,
as a vsock listener is. The socket is created by a short-lived thread that entered the
namespace with setns(2); a socket stays in the namespace it was made in, so the rest of the
process uses it normally.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import ssl
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


class DialError(Exception):
    """The guest's port could not be reached; `refused` when nothing listens on it."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _connect_in(netns: str, hosts: tuple[str, ...], port: int, timeout: float) -> socket.socket:
    """Runs in its own thread: enter the netns, connect to the first host that answers."""
    fd = os.open(Path("/run/netns") / netns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DialError(f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)
    last: OSError | None = None
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    refused = last is not None and last.errno == errno.ECONNREFUSED
    raise DialError(f"dial port {port}: {last.strerror if last else 'no address'}", refused)


def dial(netns: str, address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A connected TCP socket to `port` in the guest's network namespace."""
    if not 0 < port < 65536:
        raise DialError(
            f"port {port}: the simulator's guests listen on TCP ports 1-65535", refused=True
        )
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(_connect_in(netns, ("127.0.0.1", address), port, timeout))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    # the thread's namespace change dies with the thread; no other thread is affected
    thread = threading.Thread(target=run, name=f"dial-{netns}", daemon=True)
    thread.start()
    thread.join(timeout * 2 + 1)
    if result:
        return result[0]
    if failure:
        exc = failure[0]
        if isinstance(exc, DialError):
            raise exc
        raise DialError(f"dial port {port}: {exc}")
    raise DialError(f"dial port {port}: timed out")


def wrap_tls(
    sock: socket.socket, cert: Path, key: Path, timeout: float = CONNECT_TIMEOUT
) -> ssl.SSLSocket:
    """TLS 1.3 to the guest's service, as virt-handler's `tls=true`: the guest's certificate
    is not verified, virt-handler's own client certificate is offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert), str(key))
    sock.settimeout(timeout)
    tls = ctx.wrap_socket(sock, server_side=False)
    tls.settimeout(None)
    return tls
