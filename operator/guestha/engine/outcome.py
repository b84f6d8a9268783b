"""One plan's working state and what each group's step adds to it.

The scheduler walks the groups in dependency order; each step reads the snapshot and
what earlier steps planned (Placed, Tally) and returns an Outcome. Nothing else is
shared between steps, so the order of the walk is the only order that matters, and it
is fixed (dependencies, then names).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guestha.engine import reasons, safety
from guestha.engine.dependencies import Placed
from guestha.engine.placement import Tally
from guestha.engine.plan import CLEAR, OFFLINE, ONLINE, Action, Wait
from guestha.engine.snapshot import Snapshot
from guestha.engine.state import GroupState


@dataclass
class Context:
    snap: Snapshot
    tally: Tally
    placed: Placed = field(default_factory=Placed)


@dataclass
class Outcome:
    """A group's actions, waits and the words of its GroupDecision."""

    group: GroupState
    ctx: Context
    clears: list[Action] = field(default_factory=list)
    offlines: list[Action] = field(default_factory=list)
    onlines: list[Action] = field(default_factory=list)
    others: list[Action] = field(default_factory=list)  # on other groups (Hard children)
    waits: list[Wait] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    target: str | None = None
    switching: bool = False

    def say(self, reason: str, message: str) -> Outcome:
        self.reason, self.message = reason, message
        return self

    def clear(self, member: str, reason: str, message: str) -> None:
        if all(a.member != member for a in self.clears):
            self.clears.append(Action(CLEAR, member, self.group.name, reason, message))

    def offline(self, member: str, reason: str, message: str) -> None:
        placed = self.ctx.placed.offlines(self.group.name)
        if member not in placed:
            placed.add(member)
            self.offlines.append(Action(OFFLINE, member, self.group.name, reason, message))

    def online(self, member: str, reason: str, message: str) -> None:
        self.ctx.placed.onlines(self.group.name).add(member)
        self.ctx.tally.add(self.group, member)
        self.onlines.append(Action(ONLINE, member, self.group.name, reason, message))
        self.target = member

    def wait(self, reason: str, message: str, member: str | None = None,
             until: float | None = None) -> None:
        self.waits.append(Wait(self.group.name, member, reason, until, message))

    def wait_for_proof(self, member: str) -> None:
        """Rule 1 wait: `member` may still run the group."""
        snap = self.ctx.snap
        m = snap.members[member]
        if m.agent_reachable:
            state = m.groups.get(self.group.name)
            why = (f"its agent reports it {state}" if state is not None
                   else "its agent does not report the group (not configured there yet)")
            until = None
        else:
            bound = safety.lease_bound(m, snap.state)
            why = ("its agent does not answer" + (
                f"; its quorum lease runs out at {bound:g}" if bound is not None
                else "; no quorum-lease bound can be counted"))
            until = bound
        self.wait(reasons.NOT_CONFIRMED_OFFLINE,
                  f"{self.group.name} may still run on {member}: {why}", member, until)

