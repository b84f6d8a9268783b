"""Quorum and the self-fencing decision (guestha's part of I/O fencing, Safety rule 1c).

Votes are the cluster's members plus one for the operator. This agent counts itself, every
peer whose heartbeat it heard within the peer timeout, and the operator while the operator
contacted it within the operator lease. With a majority of votes it has quorum. Without
one for selfFenceTimeoutSeconds it must take its Failover groups offline by itself, so
the operator may start them elsewhere once that bound has passed.

A pause of the agent itself (live migration's last phase, a stopped process) makes every
contact look old at once; that silence was its own. After such a gap the agent re-checks
(asks its peers to answer at once and waits a short window) before judging: it fences
right away only when it still has no quorum after the re-check and the gap alone was
longer than its self-fence timeout (by then the rest of the cluster counts it as fenced).

Pure logic: every method takes `now` (time.monotonic seconds); no clock reads, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guestha.agent.events import rfc3339 as _rfc3339

IDLE = "Idle"  # quorum, or self-fencing disabled
PENDING = "Pending"  # no quorum; fencing when the deadline passes
RECHECKING = "Rechecking"  # after a pause of this agent: judging again before acting
FENCING = "Fencing"  # taking the Failover groups offline
FENCED = "Fenced"  # done; cleared when quorum returns
FAILED = "Failed"  # could not finish (the watchdog, when there is one, stops being petted)


@dataclass
class Decision:
    """What the agent's main loop must do after one observation."""

    fence: bool = False  # start self-fencing now
    quorum_changed: bool = False
    cleared: bool = False  # a finished self-fence was cleared (quorum is back)


class Quorum:
    """Tracks votes and the self-fence state machine."""

    def __init__(self, now: float, operator_lease: float = 15.0,
                 self_fence_timeout: float = 10.0, recheck_window: float = 1.5) -> None:
        self.operator_lease = operator_lease
        self.self_fence_timeout = self_fence_timeout  # 0: never self-fence
        self.recheck_window = recheck_window
        self.last_operator_contact: float | None = None
        self.members: list[str] = []  # every member, this one included
        self.alive_peers: list[str] = []
        self.votes = 2
        self.present = 1
        self.operator_present = False  # at the last observation
        self.has_quorum = False
        self.since = now  # when has_quorum last changed (or the agent started)
        self.state = IDLE
        self.state_since = now
        self.reason = ""
        self.lost_since: float | None = now
        self._recheck_until: float | None = None
        self._gap_expired = False

    def configure(self, operator_lease: float, self_fence_timeout: float,
                  recheck_window: float) -> None:
        self.operator_lease = operator_lease
        self.self_fence_timeout = self_fence_timeout
        self.recheck_window = recheck_window

    def operator_contact(self, arrived: float) -> None:
        """A request of the operator in charge arrived at `arrived` (requests are handled
        on several threads: an older arrival never moves the contact back)."""
        last = self.last_operator_contact
        if last is None or arrived > last:
            self.last_operator_contact = arrived

    def operator_in_contact(self, now: float) -> bool:
        last = self.last_operator_contact
        return last is not None and now - last < self.operator_lease

    def resumed(self, now: float, gap: float) -> None:
        """This agent did not run for `gap` seconds (it was paused): re-check before acting."""
        self._recheck_until = now + self.recheck_window
        if self.lost_since is not None:
            self.lost_since = None
        if self.self_fence_timeout and gap >= self.self_fence_timeout:
            self._gap_expired = True
        if self.state == PENDING:
            self._set_state(RECHECKING, now, f"resumed after a {gap:.1f} s pause of this agent")

    def _set_state(self, state: str, now: float, reason: str) -> None:
        self.state, self.state_since, self.reason = state, now, reason

    def observe(self, now: float, members: list[str], alive_peers: list[str]) -> Decision:
        """One evaluation; `members` includes this agent, `alive_peers` does not."""
        decision = Decision()
        self.members = members
        self.alive_peers = alive_peers
        self.votes = len(members) + 1
        operator = self.operator_in_contact(now)
        self.operator_present = operator
        self.present = 1 + len(alive_peers) + (1 if operator else 0)
        quorum = self.present * 2 > self.votes
        if quorum != self.has_quorum:
            self.has_quorum = quorum
            self.since = now
            decision.quorum_changed = True
        rechecking = self._recheck_until is not None and now < self._recheck_until
        if quorum:
            self.lost_since = None
            self._recheck_until = None
            self._gap_expired = False
            if self.state in (PENDING, RECHECKING):
                self._set_state(IDLE, now, "quorum regained")
            elif self.state == FENCED:
                self._set_state(IDLE, now, "quorum regained after self-fencing")
                decision.cleared = True
            return decision
        if self.state in (FENCING, FENCED, FAILED):
            return decision
        if not self.self_fence_timeout:
            self._set_state(IDLE, now, "self-fencing is disabled")
            return decision
        why = self.describe(now)
        if rechecking:
            if self.state != RECHECKING:
                self._set_state(RECHECKING, now, f"re-checking after a pause: {why}")
            return decision
        if self._recheck_until is not None:  # the re-check window ended without quorum
            self._recheck_until = None
            self.lost_since = now
            if self._gap_expired:
                self._gap_expired = False
                self._set_state(FENCING, now, f"still no quorum after a pause longer than "
                                f"selfFenceTimeoutSeconds ({self.self_fence_timeout:g}): {why}")
                decision.fence = True
                return decision
        if self.lost_since is None:
            self.lost_since = now
        if now - self.lost_since >= self.self_fence_timeout:
            self._set_state(FENCING, now, f"no quorum for {now - self.lost_since:.1f} s "
                            f"(selfFenceTimeoutSeconds {self.self_fence_timeout:g}): {why}")
            decision.fence = True
        elif self.state != PENDING:
            self._set_state(PENDING, now, f"no quorum: {why}")
        return decision

    def describe(self, now: float) -> str:
        """The last observation in words (for reasons and events)."""
        operator = "in contact" if self.operator_present else "not in contact"
        return (f"{self.present} of {self.votes} votes present (this member, "
                f"{len(self.alive_peers)} of {max(0, len(self.members) - 1)} peers, "
                f"operator {operator})")

    def fence_finished(self, now: float, ok: bool, detail: str) -> None:
        if self.state == FENCING:
            self._set_state(FENCED if ok else FAILED, now, detail)

    def status(self, now: float, wall: float) -> dict[str, Any]:
        """The quorum and selfFence objects of /v1/status."""

        def stamp(mono: float) -> str:
            t = wall - (now - mono)
            return _rfc3339(t)

        deadline = None
        if self.state == PENDING and self.lost_since is not None:
            deadline = max(0.0, self.lost_since + self.self_fence_timeout - now)
        last = self.last_operator_contact
        return {
            "quorum": {
                "votes": self.votes, "present": self.present,
                "operatorInContact": self.operator_present,
                "operatorLastContactMilliseconds": None if last is None
                else int((now - last) * 1000),
                "hasQuorum": self.has_quorum, "since": stamp(self.since),
                "members": self.members, "alivePeers": self.alive_peers,
            },
            "selfFence": {
                "state": self.state, "reason": self.reason, "since": stamp(self.state_since),
                "secondsLeft": None if deadline is None else round(deadline, 3),
                "timeoutSeconds": self.self_fence_timeout,
            },
        }
