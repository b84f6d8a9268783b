"""Peer heartbeats: UDP datagrams between the agents of one cluster (guestha's LLT/GAB).

Quorum counts a peer only on proof that the two hear each other now, so what a datagram
proves is a safety matter. A peer counts (`counted`) while both hold:
- heard: its last datagram accepted as proof of liveness is younger than the peer timeout;
- hears us: that datagram echoes one of this agent's datagrams sent within the peer
  timeout, to this agent's current run (incarnation).
A member whose sending path broke still hears its peers, but they stop echoing it, so it
loses them (and, with them, quorum) when they lose it: a one-way partition is a partition.

Wire format (version 2)::

    "GHB2" | len(sender) (1 byte) | sender (UTF-8) | MAC (32 bytes) | payload
    MAC     = HMAC-SHA256(key, "GHB2" | len(sender) | sender | payload)
    payload = JSON {"cluster", "to", "incarnation", "seq",
                    "echo": {"incarnation", "seq"} | null,
                    "view": {"alive", "hasQuorum", "selfFence"}, ["ask": true]}

- `incarnation` grows with every start of the sender, `seq` with every datagram it sends.
- `echo` is the receiver's own (incarnation, seq) as the sender last accepted them, null
  before it heard the receiver at all.
- `view` is the sender's own view (the peers it counts, its quorum), shown in /v1/status.
- `ask` asks the receiver to answer at once (after a pause or a restart).

A receiver accepts a datagram only from a configured peer, from that peer's configured
address, with a valid MAC, for its cluster and addressed to it (`to`), and newer than the
last one it accepted from that sender (a higher incarnation, or the same and a higher
seq). It learns a peer's incarnation only upward. Such a datagram proves liveness only when
its echo names the receiver's current incarnation: a datagram captured before the
receiver restarted, and replayed after, proves nothing (replay protection that survives a
restart of the receiver, which keeps nothing of its peers).

Keys. Each pair of members has its own key (guestha.protocol.keys.pair_key derives it
from the cluster's secret, which only the operator holds), so member C cannot forge A's
datagrams to B. The operator gives each member only its own pair keys, over the
mutual-TLS channel (`PUT /v1/config` `peers[].heartbeatKey`, base64). Until a
configuration with pair keys arrives, the agent signs and checks with the identity file's
heartbeat key (the cluster key of the user-data Secret), so a cluster is up before its
operator speaks; with that bootstrap key any member can still speak for any other, which
pair keys end.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from guestha.agent.sockets import SocketThread, bound
from guestha.protocol import TYPE_CHECKING
from guestha.protocol.addresses import same_host
from guestha.protocol.desired import HeartbeatConfig
from guestha.protocol.keys import CLUSTER_KEY, PAIR_KEYS
from guestha.protocol.states import PEER_DOWN, PEER_UNKNOWN, PEER_UP
from guestha.protocol.status import PeerStatus

if TYPE_CHECKING:
    from typing import Any, Callable

log = logging.getLogger(__name__)

MAGIC = b"GHB2"
MAC_BYTES = 32
MAX_DATAGRAM = 8192
MAX_SENDER = 253
ANSWER_EVERY = 0.05  # at most one immediate answer per peer in this many seconds


def encode(key: bytes, sender: str, payload: bytes) -> bytes:
    """One datagram: header, MAC over header and payload, payload."""
    name = sender.encode("utf-8")
    if not 0 < len(name) <= MAX_SENDER:
        raise ValueError(f"sender: 1 to {MAX_SENDER} bytes, got {len(name)}")
    head = MAGIC + bytes([len(name)]) + name
    return head + hmac.new(key, head + payload, hashlib.sha256).digest() + payload


def sender_of(datagram: bytes) -> str | None:
    """The sender a datagram names (not yet authenticated), None when malformed."""
    if len(datagram) > MAX_DATAGRAM or not datagram.startswith(MAGIC):
        return None
    start = len(MAGIC) + 1
    if len(datagram) < start:
        return None
    end = start + datagram[len(MAGIC)]
    if end == start or len(datagram) < end + MAC_BYTES + 2:
        return None
    try:
        return datagram[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return None


def verify(key: bytes, datagram: bytes) -> bytes | None:
    """The payload of a datagram authentic under `key`, None for anything else."""
    if sender_of(datagram) is None:
        return None
    end = len(MAGIC) + 1 + datagram[len(MAGIC)]
    mac, payload = datagram[end:end + MAC_BYTES], datagram[end + MAC_BYTES:]
    expected = hmac.new(key, datagram[:end] + payload, hashlib.sha256).digest()
    return payload if hmac.compare_digest(mac, expected) else None


@dataclass(frozen=True)
class PeerSpec:
    """A peer as the configuration names it; `key` is the pair key (None: the bootstrap
    cluster key)."""

    member: str
    address: str | None  # None: not known yet; nothing sent, nothing accepted
    port: int
    key: bytes | None = field(default=None, repr=False)
    accept: tuple[bytes, ...] = field(default=(), repr=False)  # also accepted (rotation)


@dataclass
class PeerState:
    """What this agent knows of one peer."""

    spec: PeerSpec
    incarnation: int = 0  # the newest datagram accepted (learnt upward only)
    seq: int = 0
    last_heard: float | None = None  # monotonic: the last proof of liveness
    hears_us: float | None = None  # when we sent the datagram that proof echoed
    view: dict[str, Any] = field(default_factory=dict)
    last_answer: float = 0.0  # monotonic, when we last answered its "ask"


class Heartbeat(SocketThread):
    """Sends this agent's heartbeats and tracks its peers'.

    `send_due` is called from the agent's main loop (a hung loop stops sending, so a hung
    agent looks dead to its peers, as it should); a thread of its own receives.
    """

    def __init__(self, cluster: str, member: str, key: bytes, bind_address: str, port: int,
                 incarnation: int, view: Callable[[], dict[str, Any]]) -> None:
        if not key:
            raise ValueError("the heartbeat key is empty")
        self.cluster = cluster
        self.member = member
        self.incarnation = incarnation
        self._cluster_key = key
        self._view = view
        self._lock = threading.Lock()
        self._peers: dict[str, PeerState] = {}
        defaults = HeartbeatConfig()  # until the configuration says otherwise
        self.interval = defaults.interval_milliseconds / 1000
        self.timeout = defaults.peer_timeout_milliseconds / 1000
        self._seq = 0
        self._rounds: list[int] = []  # the first seq of each round of sends ...
        self._round_times: list[float] = []  # ... and when it was sent (monotonic)
        self._next_send = 0.0
        self.counters: dict[str, int] = {
            "sent": 0, "accepted": 0, "badMac": 0, "malformed": 0, "replayed": 0,
            "unknownSender": 0, "wrongSource": 0, "otherCluster": 0, "notForUs": 0,
            "unconfirmed": 0, "sendErrors": 0}
        super().__init__(bound(bind_address, port, socket.SOCK_DGRAM), "heartbeat-rx")
        self.muted = False  # a test hook: stop sending, as if the links were cut

    @property
    def keys(self) -> str:
        """PAIR_KEYS when the configuration gave pair keys, else CLUSTER_KEY (bootstrap)."""
        with self._lock:
            return PAIR_KEYS if any(p.spec.key for p in self._peers.values()) else CLUSTER_KEY

    def configure(self, peers: Sequence[PeerSpec], interval: float, timeout: float) -> None:
        """The peers to send to and hear from; state of peers that stay is kept."""
        with self._lock:
            old = self._peers
            self._peers = {}
            for spec in peers:
                if spec.member == self.member:
                    continue
                state = old.get(spec.member) or PeerState(spec)
                state.spec = spec
                self._peers[spec.member] = state
            self.interval = interval
            self.timeout = timeout
            self._next_send = 0.0

    def members(self) -> list[str]:
        """The configured peers (not this agent)."""
        with self._lock:
            return sorted(self._peers)

    def _counts(self, p: PeerState, now: float) -> bool:
        return (p.last_heard is not None and now - p.last_heard < self.timeout
                and p.hears_us is not None and now - p.hears_us < self.timeout)

    def counted(self, now: float) -> list[str]:
        """The peers that count for quorum: heard, and hearing this run (module docstring)."""
        with self._lock:
            return sorted(name for name, p in self._peers.items() if self._counts(p, now))

    def status(self, now: float) -> list[PeerStatus]:
        with self._lock:
            out = []
            for name in sorted(self._peers):
                p = self._peers[name]
                age = None if p.last_heard is None else now - p.last_heard
                out.append(PeerStatus(
                    member=name, address=p.spec.address, port=p.spec.port,
                    state=PEER_UNKNOWN if age is None else
                    (PEER_UP if self._counts(p, now) else PEER_DOWN),
                    last_heard_milliseconds=None if age is None else int(age * 1000),
                    hears_us=p.hears_us is not None and now - p.hears_us < self.timeout,
                    incarnation=p.incarnation, seq=p.seq, view=dict(p.view)))
            return out

    # -- sending

    def _sent_at(self, seq: int) -> float | None:
        """When this run sent datagram `seq`; None when not within the peer timeout."""
        i = bisect.bisect_right(self._rounds, seq) - 1
        return self._round_times[i] if i >= 0 and seq <= self._seq else None

    def _new_round(self, now: float) -> None:
        self._rounds.append(self._seq + 1)
        self._round_times.append(now)
        stale = bisect.bisect_left(self._round_times, now - self.timeout)
        if stale:
            del self._rounds[:stale], self._round_times[:stale]

    def _payload(self, peer: PeerState, ask: bool) -> bytes:
        self._seq += 1
        echo = None if not peer.incarnation else {"incarnation": peer.incarnation,
                                                  "seq": peer.seq}
        body: dict[str, Any] = {"cluster": self.cluster, "to": peer.spec.member,
                                "incarnation": self.incarnation, "seq": self._seq,
                                "echo": echo, "view": self._view()}
        if ask:
            body["ask"] = True
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def send_due(self, now: float) -> None:
        """Sends to every peer when the interval has passed since the last round."""
        if now < self._next_send:
            return
        self._next_send = now + self.interval
        self.send_now(ask=False)

    def send_now(self, ask: bool, only: str | None = None) -> None:
        """Sends one round now; `ask` asks every peer to answer at once."""
        if self.muted:
            return
        with self._lock:
            self._new_round(time.monotonic())
            datagrams = [(p.spec, encode(p.spec.key or self._cluster_key, self.member,
                                         self._payload(p, ask)))
                         for p in self._peers.values()
                         if only in (None, p.spec.member) and p.spec.address is not None]
        for spec, datagram in datagrams:
            assert spec.address is not None  # filtered above
            try:
                self._sock.sendto(datagram, (spec.address, spec.port))
                self.counters["sent"] += 1
            except OSError as e:  # unreachable networks are normal while isolated
                self.counters["sendErrors"] += 1
                log.debug("heartbeat to %s at %s:%d: %s", spec.member, spec.address,
                          spec.port, e)

    # -- receiving

    def _loop(self) -> None:  # receives
        while not self._stopping.is_set():
            try:
                datagram, source = self._sock.recvfrom(MAX_DATAGRAM + 1)
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            try:
                self.receive(datagram, str(source[0]), time.monotonic())
            except Exception:  # one bad datagram must never stop the receiver
                log.exception("heartbeat from %s", source)

    def _drop(self, counter: str) -> None:
        self.counters[counter] += 1

    def receive(self, datagram: bytes, source: str, now: float) -> str | None:
        """Handles one datagram; returns the sender when it proved the sender's liveness."""
        if self.muted:
            return None
        sender = sender_of(datagram)
        if sender is None:
            self._drop("malformed")
            return None
        with self._lock:
            peer = self._peers.get(sender)
            spec = peer.spec if peer is not None else None
        if spec is None:
            self._drop("unknownSender")
            return None
        if spec.address is None or not same_host(source, spec.address):
            self._drop("wrongSource")
            return None
        payload = verify(spec.key or self._cluster_key, datagram)
        for key in spec.accept:  # a rotation's other key (the overlap)
            if payload is not None:
                break
            payload = verify(key, datagram)
        if payload is None:
            self._drop("badMac")
            return None
        try:
            body = json.loads(payload.decode("utf-8"))
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._drop("malformed")
            return None
        incarnation, seq, view, echo = (body.get("incarnation"), body.get("seq"),
                                        body.get("view"), body.get("echo"))
        echo_ok = echo is None or (isinstance(echo, dict) and _count(echo.get("incarnation"))
                                   and _count(echo.get("seq")))
        if not (isinstance(incarnation, int) and isinstance(seq, int) and _count(incarnation)
                and _count(seq) and isinstance(view, dict) and echo_ok):
            self._drop("malformed")
            return None
        if body.get("cluster") != self.cluster:
            self._drop("otherCluster")
            return None
        if body.get("to") != self.member:
            self._drop("notForUs")
            return None
        answer = proved = False
        with self._lock:
            peer = self._peers.get(sender)
            if peer is None:  # reconfigured meanwhile
                self.counters["unknownSender"] += 1
                return None
            if (incarnation, seq) <= (peer.incarnation, peer.seq):
                self.counters["replayed"] += 1
                return None
            peer.incarnation, peer.seq, peer.view = incarnation, seq, view
            if echo is not None and echo["incarnation"] == self.incarnation:
                proved = True
                peer.last_heard = now
                peer.hears_us = self._sent_at(echo["seq"])
                self.counters["accepted"] += 1
            else:  # authentic and new, but no proof it hears this run of ours
                self.counters["unconfirmed"] += 1
            if body.get("ask") is True and now - peer.last_answer > ANSWER_EVERY:
                peer.last_answer = now
                answer = True
        if answer:
            self.send_now(ask=False, only=sender)
        return sender if proved else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
