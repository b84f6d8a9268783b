"""Asking a member's agent directly when its peers lost it (a hung guest, fast).

The operator learns that an agent stopped answering from its own event stream only when
a long poll fails: up to the poll's timeout plus margin (channel/follower.py, about 10 s),
far past any peer timeout. Its peers learn it within the peer timeout: their heartbeats
stop, and they say so (PeerDown, with when they last heard it). So when every peer that
answers the operator reports a member Down, the operator asks that member itself, with a
short bound (`probe_timeout`): no answer makes it unreachable at once, and the engine's
own rule (engine/fencing.py: silent past the peer timeout, counted from the last time
anyone heard it) decides the rest. An answer keeps it reachable: a member the operator
still reaches is not lost because its peers do not hear it (their network, not its
guest), and is never fenced for that.

The decision is `suspects`, a pure function of the links; `Prober` runs the probes, one
at a time per member, at most one per member per `interval`. A probe whose deadline
passed while the operator's own loop was late (guestha.channel.looplag) proves nothing:
the member stays reachable and is probed again at the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from guestha.channel import looplag
from guestha.channel.aio import AgentRefusal, ChannelError, Contact
from guestha.controller.links import MemberLink

log = logging.getLogger(__name__)

PROBE_TIMEOUT_MAX = 0.3  # seconds: an agent that answers at all answers healthz in ms
PROBE_TIMEOUT_MIN = 0.25


def probe_timeout(peer_timeout: float) -> float:
    """A quarter of the peer timeout, within [PROBE_TIMEOUT_MIN, PROBE_TIMEOUT_MAX]: the
    probe comes after the peers already missed the member's heartbeats for a whole peer
    timeout, so its time is spent on top of the peer timeout and comes out of the goal's
    second (a hung guest failed over within the peer timeout and a second: fencing and
    the online elsewhere need the rest); long enough for a fresh TLS handshake with a
    guest under load (a few ms on this machine's loopback at a load of 4). A guest that
    misses its peers' heartbeats for a whole peer timeout AND cannot answer in that time
    is fenced: VCS would fence it too. A probe late because of the operator's own loop
    proves nothing (see the module docstring)."""
    return min(PROBE_TIMEOUT_MAX, max(PROBE_TIMEOUT_MIN, peer_timeout / 4.0))


def suspects(links: Mapping[str, MemberLink]) -> list[str]:
    """The members the operator still counts as reachable whom every other reachable
    member that has a word on them reports Down (at least one such peer)."""
    out = []
    for name, link in sorted(links.items()):
        if not link.reachable:
            continue
        words = [other.state.peers[name].up for peer, other in links.items()
                 if peer != name and other.reachable and name in other.state.peers]
        if words and not any(words):
            out.append(name)
    return out


class Prober:
    """Runs the probes of one cluster's supervisor (see the module docstring)."""

    def __init__(self, namespace: str, cluster: str, done: Callable[[], None]) -> None:
        self.namespace, self.cluster = namespace, cluster
        self._done = done  # wakes the supervisor
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last: dict[str, float] = {}  # member -> when its last probe started

    def start(self, links: Mapping[str, MemberLink], peer_timeout: float,
              now: float | None = None) -> list[str]:
        """Probe every suspect not probed within the last peer timeout; returns them."""
        now = time.monotonic() if now is None else now
        interval = max(peer_timeout, 1.0)
        started = []
        for name in suspects(links):
            if name in self._tasks or now - self._last.get(name, -interval) < interval:
                continue
            self._last[name] = now
            self._tasks[name] = asyncio.create_task(
                self._probe(name, links[name], probe_timeout(peer_timeout)),
                name=f"probe {self.namespace}/{name}")
            started.append(name)
        for name in set(self._last) - set(links):
            del self._last[name]
        return started

    def next_due(self, links: Mapping[str, MemberLink], peer_timeout: float,
                 now: float) -> float | None:
        """When a suspect left unprobed by `start` (probed less than an interval ago) may
        be probed again: the supervisor passes then. Nothing else may wake it: a member
        that froze just after it joined was never Up for its peers, so no PeerDown comes
        to wake the supervisor, and the next pass came with the next long poll (5 s
        later: hang failovers of 5.9 s at a 1 s peer timeout in the bench)."""
        interval = max(peer_timeout, 1.0)
        return min((self._last[name] + interval for name in suspects(links)
                    if name not in self._tasks and name in self._last
                    and now - self._last[name] < interval), default=None)

    async def _probe(self, name: str, link: MemberLink, timeout: float) -> None:
        client = link.client()
        error: str | None = None
        lag = looplag.of_running_loop()
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see leadership._call
                await client.healthz()
        except AgentRefusal:
            pass  # a refusal is an answer: the agent runs
        except TimeoutError as e:
            waited = asyncio.get_running_loop().time() - started
            if not looplag.silence_counts(waited, lag.late(started), timeout):
                error = looplag.LATE
            else:
                error = str(e) or type(e).__name__
        except (ChannelError, OSError) as e:
            error = looplag.LATE if isinstance(e, ChannelError) and e.stage == looplag.LATE \
                else str(e) or type(e).__name__
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
            self._tasks.pop(name, None)
        if not link.reachable:
            return  # the follower found out meanwhile
        if error == looplag.LATE:
            # the operator's loop was late for the probe: no answer, but no evidence
            # either; probed again at the next pass
            self._last.pop(name, None)
            log.info("%s/%s: its probe's deadline passed while the operator's loop was "
                     "late: probed again", self.namespace, name)
            self._done()
            return
        if error is None:
            link.on_contact(Contact(True, time.monotonic()))
            log.info("%s/%s: its peers lost it, but it answers the operator: not lost",
                     self.namespace, name)
        else:
            log.warning("%s/%s: its peers lost it and it did not answer a probe in %.2f s "
                        "(%s): unreachable", self.namespace, name, timeout, error)
            link.on_contact(Contact(False, link.last_contact,
                                    f"no answer to a probe in {timeout:.2f} s after its "
                                    f"peers lost it: {error}"))
        self._done()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
