"""The channel's listening socket: on the guest network, or on the VM's vsock device.

With `transport: Network` (identity file) the agent listens on listenAddress:port, where
the operator reaches it at the VMI's address. With `transport: VSOCK` the operator comes
through KubeVirt's `virtualmachineinstances/NAME/vsock` subresource: virt-handler connects
to the guest's vsock port, so the agent listens on AF_VSOCK (any CID, the same port) and
the channel needs no guest network at all.

AF_VSOCK is used only when the guest has a vsock *device*: /dev/vsock answers the local-CID
ioctl with a guest CID (KubeVirt gives guests CIDs from 3 up). The socket family alone says
nothing: a kernel with the vsock module but no virtio-vsock device lets the agent bind a
port nobody can reach. Without a device (KubeVirt's `autoattachVSOCK` not set, or the
KubeVirt simulator's guest hosts, which stand in for vsock by dialling the guest's
loopback) the agent listens on 127.0.0.1:port: reachable from inside the guest only, as a
vsock port is unreachable from the guest network. The log says which one it took.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct

from guestha.agent.sockets import bound

log = logging.getLogger(__name__)

VSOCK_DEVICE = "/dev/vsock"
IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7B9  # <linux/vm_sockets.h>
FIRST_GUEST_CID = 3  # 0 hypervisor, 1 local loopback, 2 host
VMADDR_CID_ANY = 0xFFFFFFFF
LOOPBACK = "127.0.0.1"


def local_cid(device: str = VSOCK_DEVICE) -> int | None:
    """This guest's vsock context id, or None when there is no vsock device."""
    try:
        fd = os.open(device, os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, b"\0" * 4)
    except OSError:  # not a vsock device (e.g. masked with /dev/null)
        return None
    finally:
        os.close(fd)
    cid = int(struct.unpack("I", raw)[0])
    return None if cid == VMADDR_CID_ANY else cid


def tcp_listener(address: str, port: int) -> socket.socket:
    """A TCP socket listening on (address, port)."""
    sock = bound(address, port, socket.SOCK_STREAM)
    try:
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _vsock(port: int) -> socket.socket:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise OSError(errno.EAFNOSUPPORT, "this Python has no AF_VSOCK")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((VMADDR_CID_ANY, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def open_listener(
    transport: str, address: str, port: int, device: str = VSOCK_DEVICE
) -> tuple[socket.socket, str]:
    """A bound, listening socket for the channel, and words saying where it listens."""
    if transport != "VSOCK":
        return tcp_listener(address, port), f"{address}:{port} (Network)"
    cid = local_cid(device)
    if cid is not None and cid >= FIRST_GUEST_CID:
        try:
            return _vsock(port), f"AF_VSOCK port {port} (this guest's CID is {cid})"
        except OSError as e:
            log.warning(
                "VSOCK transport: AF_VSOCK port %d cannot be bound (%s); "
                "listening on %s:%d inside the guest instead",
                port,
                e,
                LOOPBACK,
                port,
            )
    else:
        log.info(
            "VSOCK transport: no vsock device here (%s %s); listening on %s:%d inside "
            "the guest, where a stand-in for virt-handler's vsock dial reaches it",
            device,
            "answers no guest CID" if os.path.exists(device) else "is absent",
            LOOPBACK,
            port,
        )
    return tcp_listener(LOOPBACK, port), f"{LOOPBACK}:{port} (VSOCK stand-in, guest loopback only)"
