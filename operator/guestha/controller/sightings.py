"""When each member was last heard, by the operator and by its peers: the times the
quorum-lease bound (safety rule 1c, guestha.engine.safety) counts from.

These times must never be too early: a bound counted from a contact earlier than the
real last one could let a group start elsewhere while the silent member still holds its
quorum. So every rule here errs late:
- when the supervisor first sees a member (at its start: a new operator or a new
  leader, or when the member joins) nothing is known of what was heard of it before:
  its last contact and last hearing are that moment, as if it had been heard just then;
- the operator's last contact with a member is its agent's last answer, kept when the
  member's link goes (a guest stopped, a new run of it);
- a member was heard by its peers at the latest time an answering peer reports hearing
  it, and, for peers that may have shared a partition with it without saying so, when
  such a peer answers again after a silence, or when its stop is confirmed.

An answering peer's report is its latest statement, not the most it ever said: while a
peer counts the member Up, the operator can only take it as heard "now", and those
"now"s advance with every pass until the peer's PeerDown says when it really last heard
it (up to a peer timeout earlier). Kept as a maximum, that moment would be late by a
whole peer timeout, and a hung member found lost at twice its peer timeout (measured:
detection 5.8 s at a 3 s peer timeout). The correction errs late still: the peer's own
figure, converted on the operator's clock when the event arrived; and the quorum-lease
bound adds the peer timeout to it (the peers stop counting the member then). A peer that
stops answering keeps its last statement; one that returns floors every member at its
return, as before.

Pure (times are given, on the monotonic clock of the operator), so the rules are tested
with tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Sighting:
    last_contact: float
    floor: float  # first seen, a peer's return or stop: no hearing counts from before
    groups: dict[str, str] = field(default_factory=dict)  # the agent's last report
    by_peer: dict[str, float] = field(default_factory=dict)  # each peer's latest statement

    @property
    def last_heard_by_peers(self) -> float:
        return max([self.floor, *self.by_peer.values()])


class Sightings:
    """The times of every member of one cluster (see the module docstring)."""

    def __init__(self) -> None:
        self._by_member: dict[str, Sighting] = {}

    def members(self, members: Iterable[str], now: float) -> None:
        """The cluster's members at `now`: a new one counts as heard now, one that left
        is forgotten."""
        wanted = set(members)
        for member in list(self._by_member):
            if member not in wanted:
                del self._by_member[member]
        for member in wanted:
            self._by_member.setdefault(member, Sighting(now, now))

    def of(self, member: str) -> Sighting:
        """A member given to `members` (KeyError otherwise)."""
        return self._by_member[member]

    def answered(self, member: str, at: float, groups: Mapping[str, str]) -> None:
        """The member's agent answered at `at` (the follower's last contact) and reports
        these group states."""
        sight = self._by_member.get(member)
        if sight is None:
            return
        sight.last_contact = max(sight.last_contact, at)
        sight.groups = dict(groups)

    def heard(self, member: str, at: float | None, peer: str | None = None) -> None:
        """An answering `peer` reports hearing `member` at `at` (None: never in its
        run, which changes nothing): its latest statement stands for it. Without a peer,
        a floor: no hearing counts from before `at`."""
        sight = self._by_member.get(member)
        if sight is None or at is None:
            return
        if peer is None:
            sight.floor = max(sight.floor, at)
        else:
            sight.by_peer[peer] = at

    def peer_returned(self, peer: str, at: float, members: Iterable[str]) -> None:
        """`peer` answers again after a silence (or for the first time in a new run): it
        may have heard every other member until now without saying so."""
        for member in members:
            if member != peer:
                self.heard(member, at)

    def peer_stopped(self, peer: str, at: float, members: Iterable[str]) -> None:
        """`peer`'s stop was confirmed at `at`: it may have heard the others until then."""
        self.peer_returned(peer, at, members)
