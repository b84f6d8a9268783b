"""Peer heartbeats: UDP datagrams between the agents of one cluster (guestha's LLT/GAB).

Each datagram is authenticated with HMAC-SHA256 under the cluster's heartbeat key (the
key file's bytes, as they are) and carries the cluster, the sender, its incarnation (a
number that grows with every agent start) and a sequence number that grows with every
datagram. A receiver accepts a datagram only when it is newer than the last one it
accepted from that sender: a higher incarnation, or the same incarnation and a higher
sequence, so a captured datagram replayed later is dropped. Each datagram also carries the
sender's own view (which peers it hears, whether it has quorum), shown in /v1/status.

A peer is alive while its last accepted datagram is younger than the peer timeout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from guestha.agent.sockets import SocketThread, bound

log = logging.getLogger(__name__)

MAGIC = b"GHB1"
MAC_BYTES = 32
MAX_DATAGRAM = 8192


@dataclass(frozen=True)
class PeerSpec:
    """A peer as the configuration names it."""

    member: str
    address: str
    port: int


@dataclass
class PeerState:
    """What this agent knows of one peer."""

    spec: PeerSpec
    incarnation: int = 0
    seq: int = 0
    last_seen: float | None = None  # monotonic
    source: str = ""
    view: dict[str, Any] = field(default_factory=dict)
    last_answer: float = 0.0  # monotonic, when we last answered its "ask"


def sign(key: bytes, payload: bytes) -> bytes:
    """The datagram for one payload: magic, MAC over magic + payload, payload."""
    return MAGIC + hmac.new(key, MAGIC + payload, hashlib.sha256).digest() + payload


def verify(key: bytes, datagram: bytes) -> bytes | None:
    """The payload of an authentic datagram, None for anything else."""
    if len(datagram) < len(MAGIC) + MAC_BYTES + 2 or not datagram.startswith(MAGIC):
        return None
    mac = datagram[len(MAGIC):len(MAGIC) + MAC_BYTES]
    payload = datagram[len(MAGIC) + MAC_BYTES:]
    expected = hmac.new(key, MAGIC + payload, hashlib.sha256).digest()
    return payload if hmac.compare_digest(mac, expected) else None


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
        self._key = key
        self._view = view
        self._lock = threading.Lock()
        self._peers: dict[str, PeerState] = {}
        self.interval = 0.5
        self.timeout = 3.0
        self._seq = 0
        self._next_send = 0.0
        self.counters: dict[str, int] = {"sent": 0, "accepted": 0, "badMac": 0, "malformed": 0,
                                         "replayed": 0, "unknownSender": 0, "otherCluster": 0,
                                         "sendErrors": 0}
        super().__init__(bound(bind_address, port, socket.SOCK_DGRAM), "heartbeat-rx")
        self.muted = False  # a test hook: stop sending, as if the links were cut

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

    def alive(self, now: float) -> list[str]:
        """Peers heard from within the peer timeout."""
        with self._lock:
            return sorted(name for name, p in self._peers.items()
                          if p.last_seen is not None and now - p.last_seen < self.timeout)

    def status(self, now: float) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for name in sorted(self._peers):
                p = self._peers[name]
                age = None if p.last_seen is None else now - p.last_seen
                out.append({
                    "member": name, "address": p.spec.address, "port": p.spec.port,
                    "state": "Unknown" if age is None else
                    ("Up" if age < self.timeout else "Down"),
                    "lastHeardMilliseconds": None if age is None else int(age * 1000),
                    "incarnation": p.incarnation, "seq": p.seq, "view": p.view,
                })
            return out

    def _payload(self, ask: bool) -> bytes:
        self._seq += 1
        body = {"cluster": self.cluster, "member": self.member,
                "incarnation": self.incarnation, "seq": self._seq, "view": self._view()}
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
            targets = [p.spec for p in self._peers.values() if only in (None, p.spec.member)]
        for spec in targets:
            with self._lock:
                datagram = sign(self._key, self._payload(ask))
            try:
                self._sock.sendto(datagram, (spec.address, spec.port))
                self.counters["sent"] += 1
            except OSError as e:  # unreachable networks are normal while isolated
                self.counters["sendErrors"] += 1
                log.debug("heartbeat to %s at %s:%d: %s", spec.member, spec.address,
                          spec.port, e)

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

    def receive(self, datagram: bytes, source: str, now: float) -> str | None:
        """Handles one datagram; returns the sender when it was accepted."""
        if self.muted:
            return None
        if len(datagram) > MAX_DATAGRAM:
            self.counters["malformed"] += 1
            return None
        payload = verify(self._key, datagram)
        if payload is None:
            self.counters["badMac"] += 1
            return None
        try:
            body = json.loads(payload.decode("utf-8"))
        except ValueError:
            self.counters["malformed"] += 1
            return None
        if not isinstance(body, dict):
            self.counters["malformed"] += 1
            return None
        cluster, member = body.get("cluster"), body.get("member")
        incarnation, seq, view = body.get("incarnation"), body.get("seq"), body.get("view")
        if (not isinstance(member, str) or not isinstance(incarnation, int)
                or not isinstance(seq, int) or not isinstance(view, dict)
                or isinstance(incarnation, bool) or isinstance(seq, bool)):
            self.counters["malformed"] += 1
            return None
        if cluster != self.cluster:
            self.counters["otherCluster"] += 1
            return None
        answer = False
        with self._lock:
            peer = self._peers.get(member)
            if peer is None:
                self.counters["unknownSender"] += 1
                return None
            if (incarnation, seq) <= (peer.incarnation, peer.seq):
                self.counters["replayed"] += 1
                return None
            peer.incarnation, peer.seq = incarnation, seq
            peer.last_seen = now
            peer.source = source
            peer.view = view
            self.counters["accepted"] += 1
            if body.get("ask") is True and now - peer.last_answer > 0.05:
                peer.last_answer = now
                answer = True
        if answer:
            self.send_now(ask=False, only=member)
        return member
