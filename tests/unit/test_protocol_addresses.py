"""guestha.protocol.addresses reads IP addresses as the ipaddress module does (the
reference here), without loading it into the agent: the same texts are addresses, and
an IPv4 address and its IPv4-mapped IPv6 form are the same host."""

from __future__ import annotations

import ipaddress

import pytest

from guestha.protocol.addresses import packed, same_host

pytestmark = pytest.mark.unit

TEXTS = [
    "10.0.0.12", "0.0.0.0", "255.255.255.255", "127.0.0.1", "::", "::1", "fe80::1",
    "2001:db8::8a2e:370:7334", "2001:0db8:0000:0000:0000:ff00:0042:8329", "::ffff:10.0.0.12",
    "::ffff:a00:c", "64:ff9b::10.0.0.12", "fe80::1%eth0", "FE80::ABCD",
    # not addresses
    "", " 10.0.0.12", "10.0.0.12 ", "10.0.0", "10.0.0.12.1", "10.0.0.256", "010.0.0.12",
    "10.0.0.12/24", "1e.0.0.1", "::g", "1:2:3:4:5:6:7:8:9", "fe80::1%", "10.0.0.1%eth0",
    "web-a", "localhost", "0x7f.0.0.1", "1::2::3",
]


def reference(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@pytest.mark.parametrize("text", TEXTS)
def test_the_same_texts_are_addresses(text: str) -> None:
    assert (packed(text) is not None) == (reference(text) is not None), text


@pytest.mark.parametrize("text", [t for t in TEXTS if reference(t) is not None])
def test_an_address_packs_as_its_host(text: str) -> None:
    address = reference(text)
    assert address is not None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    assert packed(text) == address.packed


def test_same_host() -> None:
    assert same_host("10.0.0.12", "::ffff:10.0.0.12")
    assert same_host("fe80::1", "FE80:0:0::1")
    assert not same_host("10.0.0.12", "10.0.0.13")
    assert not same_host("10.0.0.12", "web-a")
    assert not same_host("", "")
    assert packed(None) is None and packed(12) is None
