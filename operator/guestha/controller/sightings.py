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

Pure (times are given, on the monotonic clock of the operator), so the rules are tested
with tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Sighting:
    last_contact: float
    last_heard_by_peers: float
    groups: dict[str, str] = field(default_factory=dict)  # the agent's last report


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

    def heard(self, member: str, at: float | None) -> None:
        """An answering peer reports hearing `member` at `at` (None: never in its run)."""
        sight = self._by_member.get(member)
        if sight is not None and at is not None:
            sight.last_heard_by_peers = max(sight.last_heard_by_peers, at)

    def peer_returned(self, peer: str, at: float, members: Iterable[str]) -> None:
        """`peer` answers again after a silence (or for the first time in a new run): it
        may have heard every other member until now without saying so."""
        for member in members:
            if member != peer:
                self.heard(member, at)

    def peer_stopped(self, peer: str, at: float, members: Iterable[str]) -> None:
        """`peer`'s stop was confirmed at `at`: it may have heard the others until then."""
        self.peer_returned(peer, at, members)
