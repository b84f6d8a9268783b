"""IP addresses as text, read without the ipaddress module.

Both sides check a peer's address (guestha.protocol.desired) and the agent compares the
source of each heartbeat with it (guestha.agent.heartbeat); ipaddress would do both, but
it would stay in the agent's memory for its whole run (about a quarter of a megabyte on
Python 3.9) for these two small questions. The C library's inet_pton answers them, as
strictly (dotted quads only, no leading zeros; the IPv6 forms of RFC 4291). Only IP
resources, which work with prefixes and interfaces, import ipaddress.
"""

from __future__ import annotations

import socket

_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses


def packed(text: object) -> bytes | None:
    """The address `text` names, packed: 4 bytes for IPv4 and for an IPv4-mapped IPv6
    address (the same host), 16 for IPv6 (its zone, `%eth0`, left out); None when `text`
    is not an IP address."""
    if not isinstance(text, str):
        return None
    if ":" in text:
        address, percent, zone = text.partition("%")
        if percent and not zone:
            return None
        try:
            raw = socket.inet_pton(socket.AF_INET6, address)
        except (OSError, ValueError):
            return None
        return raw[12:] if raw.startswith(_MAPPED_PREFIX) else raw
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None


def same_host(a: str, b: str) -> bool:
    """Whether two addresses name the same host (an IPv4 address and its IPv4-mapped IPv6
    form do); False when either is not an address."""
    x, y = packed(a), packed(b)
    return x is not None and x == y
