"""Heartbeats: what a datagram proves (guestha.agent.heartbeat).

Real Heartbeat objects with real sockets on 127.0.0.1. Most tests point each agent's
peer at a tap (a plain UDP socket of the test), read what it sent there and hand it to
the other's `receive` with a chosen source and time: the wire is the test's to cut. The real-agent
attacks (theft of the port, replay after a restart, forgery by another member, a one-way
partition) are in tests/agent.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import astuple

import pytest

from guestha.agent.heartbeat import (
    Heartbeat,
    PeerSpec,
    encode,
    sender_of,
    verify,
)
from guestha.protocol.keys import pair_key
from kits.waiting import wait_for

pytestmark = pytest.mark.unit

CLUSTER_KEY = b"cluster key"
SECRET = b"the operator's heartbeat secret"


def _agent(member: str, incarnation: int, key: bytes = CLUSTER_KEY) -> Heartbeat:
    return Heartbeat("web", member, key, "127.0.0.1", 0, incarnation,
                     lambda: {"alive": [], "hasQuorum": False})


TAPS: dict[str, socket.socket] = {}


def _tap(member: str) -> PeerSpec:
    """Where the others send `member`'s datagrams: a socket of the test."""
    tap = TAPS.get(member)
    if tap is None:
        tap = TAPS[member] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tap.bind(("127.0.0.1", 0))
        tap.settimeout(2.0)
    return PeerSpec(member, "127.0.0.1", tap.getsockname()[1])


@pytest.fixture(autouse=True)
def _close_taps() -> Iterator[None]:
    yield
    for tap in TAPS.values():
        tap.close()
    TAPS.clear()


@pytest.fixture
def pair() -> Iterator[tuple[Heartbeat, Heartbeat]]:
    a, b = _agent("a", 5), _agent("b", 7)
    a.configure([_tap("b")], 0.1, 1.0)
    b.configure([_tap("a")], 0.1, 1.0)
    yield a, b
    a.close()
    b.close()


def _payload(to: str = "b", incarnation: int = 5, seq: int = 1,
             echo: dict[str, int] | None = None, **extra: object) -> bytes:
    return json.dumps({"cluster": "web", "to": to, "incarnation": incarnation, "seq": seq,
                       "echo": echo, "view": {}, **extra}).encode()


def _datagrams(sender: Heartbeat, to: Heartbeat) -> list[bytes]:
    """What `sender` sends `to` in one round, read from `to`'s tap."""
    sender.send_now(ask=False, only=to.member)
    return [TAPS[to.member].recv(9000)]


def test_the_wire_format_names_the_sender_and_authenticates_it() -> None:
    datagram = encode(b"k", "web-a", b'{"x":1}')
    assert datagram.startswith(b"GHB2\x05web-a")
    assert sender_of(datagram) == "web-a" and verify(b"k", datagram) == b'{"x":1}'
    assert verify(b"other", datagram) is None
    assert verify(b"k", datagram[:-1] + b"2") is None  # payload changed
    assert verify(b"k", datagram.replace(b"web-a", b"web-c")) is None  # sender changed
    assert sender_of(b"GHB1" + datagram[4:]) is None and sender_of(b"GHB2") is None


def test_pair_keys_are_one_per_pair_and_the_same_both_ways() -> None:
    ab = pair_key(SECRET, "web", "a", "b")
    assert ab == pair_key(SECRET, "web", "b", "a") and len(ab) == 32
    assert len({ab, pair_key(SECRET, "web", "a", "c"), pair_key(SECRET, "web", "b", "c"),
                pair_key(SECRET, "shop", "a", "b"), pair_key(b"other", "web", "a", "b")}) == 5
    with pytest.raises(ValueError):
        pair_key(SECRET, "web", "a", "a")


def test_a_peer_counts_only_when_it_hears_this_run(pair: tuple[Heartbeat, Heartbeat]) -> None:
    a, b = pair
    now = time.monotonic()
    # b has not heard a yet: its datagram echoes nothing, a learns b's run but counts no one
    [first] = _datagrams(b, a)
    assert a.receive(first, "127.0.0.1", now) is None
    assert a.counters["unconfirmed"] == 1 and a.counted(now) == []
    # a -> b (echoing b), b -> a (echoing a's datagram just sent): both count each other
    [to_b] = _datagrams(a, b)
    assert b.receive(to_b, "127.0.0.1", now) == "a"
    [to_a] = _datagrams(b, a)
    assert a.receive(to_a, "127.0.0.1", now) == "b"
    assert a.counted(now) == ["b"] and b.counted(now) == ["a"]
    assert a.status(now)[0].state == "Up" and a.status(now)[0].hears_us


def test_a_one_way_partition_loses_the_peer_on_both_sides(
        pair: tuple[Heartbeat, Heartbeat]) -> None:
    """a's datagrams stop reaching b; b's still reach a, echoing a's last datagram that b
    got. a stops counting b when that datagram is a peer timeout old, as b stops
    counting a."""
    a, b = pair
    t0 = time.monotonic()
    b.receive(_datagrams(a, b)[0], "127.0.0.1", t0)
    a.receive(_datagrams(b, a)[0], "127.0.0.1", t0)
    assert a.counted(t0) == ["b"]
    # From now on only b -> a arrives; a keeps sending into the void.
    for i in range(1, 15):
        now = t0 + i * 0.1
        _datagrams(a, b)  # lost
        a.receive(_datagrams(b, a)[0], "127.0.0.1", now)
    late = t0 + 1.4
    assert (a.status(late)[0].last_heard_milliseconds or 0) < 200  # a hears b ...
    assert a.counted(late) == [] and not a.status(late)[0].hears_us  # ... but b not a
    assert b.counted(late) == []


def test_a_datagram_from_before_the_receivers_restart_proves_nothing(
        pair: tuple[Heartbeat, Heartbeat]) -> None:
    a, b = pair
    now = time.monotonic()
    b.receive(_datagrams(a, b)[0], "127.0.0.1", now)
    a.receive(_datagrams(b, a)[0], "127.0.0.1", now)
    captured = _datagrams(a, b)[0]  # echoes b's run 7
    assert b.receive(captured, "127.0.0.1", now) == "a"
    b.close()
    restarted = _agent("b", 8)  # b's next run knows nothing of a
    restarted.configure([_tap("a")], 0.1, 1.0)
    try:
        assert restarted.receive(captured, "127.0.0.1", now + 2) is None  # replayed
        assert restarted.counted(now + 2) == []
        assert restarted.counters["unconfirmed"] == 1
        assert restarted.receive(captured, "127.0.0.1", now + 2.1) is None
        assert restarted.counters["replayed"] == 1
    finally:
        restarted.close()


def test_replays_and_strangers_are_dropped(pair: tuple[Heartbeat, Heartbeat]) -> None:
    a, b = pair
    now = time.monotonic()
    b.receive(_datagrams(a, b)[0], "127.0.0.1", now)
    a.receive(_datagrams(b, a)[0], "127.0.0.1", now)
    [datagram] = _datagrams(a, b)
    assert b.receive(datagram, "127.0.0.1", now) == "a"
    assert b.receive(datagram, "127.0.0.1", now) is None
    assert b.counters["replayed"] == 1
    echo = {"incarnation": 7, "seq": 1}
    stranger = encode(CLUSTER_KEY, "z", _payload(echo=echo, seq=99))
    assert b.receive(stranger, "127.0.0.1", now) is None
    misdirected = encode(CLUSTER_KEY, "a", _payload(to="c", echo=echo, seq=100))
    assert b.receive(misdirected, "127.0.0.1", now) is None
    other = encode(CLUSTER_KEY, "a", _payload(echo=echo, seq=101)
                   .replace(b'"web"', b'"shop"'))
    assert b.receive(other, "127.0.0.1", now) is None
    assert (b.counters["unknownSender"], b.counters["notForUs"],
            b.counters["otherCluster"]) == (1, 1, 1)


def test_datagrams_only_from_the_peers_address(pair: tuple[Heartbeat, Heartbeat]) -> None:
    a, b = pair
    now = time.monotonic()
    a.receive(_datagrams(b, a)[0], "127.0.0.1", now)  # so that a's next one echoes b
    [datagram] = _datagrams(a, b)
    assert b.receive(datagram, "127.0.0.9", now) is None
    assert b.counters["wrongSource"] == 1 and b.counters["badMac"] == 0
    assert b.receive(datagram, "::ffff:127.0.0.1", now) == "a"  # the same address


def test_with_pair_keys_another_members_keys_forge_nothing() -> None:
    keys = {(x, y): pair_key(SECRET, "web", x, y) for x, y in (("a", "b"), ("a", "c"),
                                                                ("b", "c"))}
    a, b = _agent("a", 5), _agent("b", 7)
    try:
        a.configure([PeerSpec(*astuple(_tap("b"))[:3], key=keys["a", "b"])], 0.1, 1.0)
        b.configure([PeerSpec(*astuple(_tap("a"))[:3], key=keys["a", "b"]),
                     PeerSpec("c", "127.0.0.1", 9, key=keys["b", "c"])], 0.1, 1.0)
        assert b.keys == "pair"
        now = time.monotonic()
        echo = {"incarnation": 7, "seq": 1}
        # c holds the cluster key and its own pair keys, and speaks for a
        for key in (CLUSTER_KEY, keys["a", "c"], keys["b", "c"]):
            forged = encode(key, "a", _payload(echo=echo, seq=50))
            assert b.receive(forged, "127.0.0.1", now) is None
        assert b.counters["badMac"] == 3
        [genuine] = _datagrams(a, b)
        assert b.receive(genuine, "127.0.0.1", now) is None  # authentic, echoes nothing yet
        assert b.counters["unconfirmed"] == 1 and b.counters["badMac"] == 3
    finally:
        a.close()
        b.close()


def test_heartbeats_flow_over_udp_and_a_wrong_key_is_refused() -> None:
    a, b = _agent("a", 5), _agent("b", 7)
    a.configure([PeerSpec("b", *b.address)], 0.1, 1.0)
    b.configure([PeerSpec("a", *a.address)], 0.1, 1.0)
    a.start()
    b.start()
    try:
        wait_for(lambda: _exchange(a, b), 3.0, 0.01, what="the two to count each other")
        assert b.status(time.monotonic())[0].view == {"alive": [], "hasQuorum": False}
    finally:
        a.close()
        b.close()
    a, c = _agent("a", 5), _agent("c", 9, key=b"wrong")
    a.configure([PeerSpec("c", *c.address)], 0.1, 1.0)
    c.configure([PeerSpec("a", *a.address)], 0.1, 1.0)
    c.start()
    try:
        a.send_now(ask=False)
        wait_for(lambda: c.counters["badMac"] == 1, 3.0, 0.01, what="the forged datagram refused")
        assert c.counted(time.monotonic()) == []
    finally:
        a.close()
        c.close()


def _exchange(a: Heartbeat, b: Heartbeat) -> bool:
    a.send_now(ask=True)  # b answers an ask at once
    time.sleep(0.02)
    now = time.monotonic()
    return a.counted(now) == ["b"] and b.counted(now) == ["a"]



def test_pair_keys_in_the_configuration_are_checked_and_all_or_none() -> None:
    from guestha.protocol.desired import DesiredConfig
    from guestha.protocol.fields import FieldError

    key = base64.b64encode(pair_key(SECRET, "web", "a", "b")).decode()
    config = DesiredConfig.from_dict({"peers": [
        {"member": "b", "address": "10.0.0.2", "heartbeatKey": key},
        {"member": "c", "address": "10.0.0.3", "heartbeatKey": key}]}, "a")
    assert [p.heartbeat_key for p in config.peers] == [base64.b64decode(key)] * 2
    assert "heartbeat_key" not in repr(config)  # keys stay out of logs and errors
    for bad, words in (("not base64!", "base64"), (base64.b64encode(b"short").decode(),
                                                    "at least 16 bytes"), (7, "base64")):
        with pytest.raises(FieldError, match=rf"config\.peers\[b\]\.heartbeatKey: .*{words}"):
            DesiredConfig.from_dict({"peers": [
                {"member": "b", "address": "10.0.0.2", "heartbeatKey": bad}]}, "a")
    with pytest.raises(FieldError, match=r"config\.peers\[c\]\.heartbeatKey: required"):
        DesiredConfig.from_dict({"peers": [
            {"member": "b", "address": "10.0.0.2", "heartbeatKey": key},
            {"member": "c", "address": "10.0.0.3"}]}, "a")


def test_a_member_without_a_known_address_is_a_vote_that_nobody_can_speak_for() -> None:
    """A member whose VM never ran has no address yet; it is still a member (the quorum
    counts its vote), but nothing is sent to it and no datagram counts as its."""
    from guestha.protocol.desired import DesiredConfig

    config = DesiredConfig.from_dict({"peers": [{"member": "b", "address": "10.0.0.2"},
                                                {"member": "c"}]}, "a")
    assert [(p.member, p.address) for p in config.peers] == [("b", "10.0.0.2"), ("c", None)]
    assert config.to_dict()["peers"][1] == {"member": "c"}
    a, c = _agent("a", 5), _agent("c", 9)
    try:
        a.configure([PeerSpec("c", None, 9)], 0.1, 1.0)
        a.send_now(ask=True)
        assert a.counters["sent"] == 0
        c.configure([_tap("a")], 0.1, 1.0)
        [datagram] = _datagrams(c, a)
        assert a.receive(datagram, "127.0.0.1", time.monotonic()) is None
        assert a.counters["wrongSource"] == 1
        [peer] = a.status(time.monotonic())
        assert peer.address is None and peer.state == "Unknown"
    finally:
        a.close()
        c.close()


def test_during_a_key_rotation_both_keys_are_accepted_and_only_those() -> None:
    """The overlap of a heartbeat secret's rotation: b accepts a's datagrams signed with
    the old pair key or the new one (acceptKeys), whichever a sends with, and nothing
    signed with a third key; once the old key is dropped, it is refused."""
    old = pair_key(SECRET, "web", "a", "b")
    new = pair_key(b"the next heartbeat secret", "web", "a", "b")
    a, b = _agent("a", 5), _agent("b", 7)
    try:
        b.configure([PeerSpec(*astuple(_tap("a"))[:3], key=old, accept=(new,))], 0.1, 1.0)
        for key in (old, new):
            a.configure([PeerSpec(*astuple(_tap("b"))[:3], key=key)], 0.1, 1.0)
            [datagram] = _datagrams(a, b)
            b.receive(datagram, "127.0.0.1", time.monotonic())
            assert b.counters["badMac"] == 0, key
        assert b.counters["unconfirmed"] == 2
        stranger = encode(pair_key(b"another secret", "web", "a", "b"), "a",
                          _payload(seq=90))
        assert b.receive(stranger, "127.0.0.1", time.monotonic()) is None
        assert b.counters["badMac"] == 1
        b.configure([PeerSpec(*astuple(_tap("a"))[:3], key=new)], 0.1, 1.0)
        a.configure([PeerSpec(*astuple(_tap("b"))[:3], key=old)], 0.1, 1.0)
        [late] = _datagrams(a, b)
        assert b.receive(late, "127.0.0.1", time.monotonic()) is None
        assert b.counters["badMac"] == 2
    finally:
        a.close()
        b.close()


def test_accept_keys_in_the_configuration_are_checked() -> None:
    from guestha.protocol.desired import DesiredConfig
    from guestha.protocol.fields import FieldError

    key = base64.b64encode(pair_key(SECRET, "web", "a", "b")).decode()
    other = base64.b64encode(pair_key(b"next", "web", "a", "b")).decode()
    config = DesiredConfig.from_dict({"peers": [
        {"member": "b", "address": "10.0.0.2", "heartbeatKey": key, "acceptKeys": [other]}]},
        "a")
    assert config.peers[0].accept_keys == (base64.b64decode(other),)
    assert DesiredConfig.from_dict(config.to_dict(), "a") == config
    assert "accept_keys" not in repr(config)
    with pytest.raises(FieldError, match=r"peers\[b\]\.acceptKeys: only with a heartbeatKey"):
        DesiredConfig.from_dict({"peers": [
            {"member": "b", "address": "10.0.0.2", "acceptKeys": [other]}]}, "a")
    with pytest.raises(FieldError, match=r"peers\[b\]\.acceptKeys\[0\]: must be base64"):
        DesiredConfig.from_dict({"peers": [
            {"member": "b", "address": "10.0.0.2", "heartbeatKey": key,
             "acceptKeys": ["short"]}]}, "a")
    with pytest.raises(FieldError, match=r"peers\[b\]\.acceptKeys: at most 2"):
        DesiredConfig.from_dict({"peers": [
            {"member": "b", "address": "10.0.0.2", "heartbeatKey": key,
             "acceptKeys": [other] * 3}]}, "a")
