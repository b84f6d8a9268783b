"""Where a group goes: the failover policies and the AutoStartList order.

A candidate is a system whose agent answers, whose VMI runs on a Ready node, whose agent
reports the group Offline (not Faulted: a fault keeps the group off that member until
it is cleared, as in VCS), and whose failed online attempts have not passed
onlineRetryLimit. Among candidates:
- AutoStart (no fault seen yet): AutoStartList in its own order; left out, the systems
  by priority (VCS AutoStartPolicy Order over AutoStartList).
- Priority: the lowest priority number, then the name (VCS FailOverPolicy Priority).
- RoundRobin: the member with the fewest groups online or going online on it, counted
  across the whole cluster (every group, not only this one's systems), then priority,
  then name (VCS RoundRobin counts the groups online on each system).
- Load: free capacity = the member's capacity minus the loads of the groups online or
  going online there; the highest free capacity wins, then priority, then name. A group
  whose load fits nowhere waits (InsufficientCapacity); AutoStart checks the fit too
  (VCS Load policy: AvailableCapacity = Capacity - sum of Load; a group whose Load
  exceeds every system's AvailableCapacity is not brought online).
The counts include what this plan starts: the Tally is updated as each online is
planned, and groups are planned in a fixed order, so two groups placed in one plan
spread as a person placing them one after the other would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from guestha.engine.snapshot import Snapshot
from guestha.engine.state import LOAD, ROUND_ROBIN, GroupState
from guestha.protocol.states import OFFLINE, ONLINE, PARTIAL, STARTING

# Reported states that count as "online or going online" for RoundRobin and Load.
OCCUPYING = (ONLINE, PARTIAL, STARTING)


@dataclass
class Tally:
    """Groups and load online or going online per member (mutable, one per plan)."""

    count: dict[str, int]
    used: dict[str, int]
    capacity: dict[str, int]

    @classmethod
    def of(cls, snap: Snapshot) -> Tally:
        loads = {g.name: g.load for g in snap.groups.values()}
        count = {n: 0 for n in snap.members}
        used = {n: 0 for n in snap.members}
        for name, m in snap.members.items():
            if not m.agent_reachable:
                continue
            for group, st in m.groups.items():
                if st in OCCUPYING:
                    count[name] += 1
                    used[name] += loads.get(group, 0)
        return cls(count, used, {n: m.capacity for n, m in snap.members.items()})

    def free(self, member: str) -> int:
        return self.capacity.get(member, 0) - self.used.get(member, 0)

    def fits(self, group: GroupState, member: str) -> bool:
        return group.failover_policy != LOAD or self.free(member) >= group.load

    def add(self, group: GroupState, member: str) -> None:
        self.count[member] = self.count.get(member, 0) + 1
        self.used[member] = self.used.get(member, 0) + group.load


def candidate(snap: Snapshot, group: GroupState, member: str) -> bool:
    """The member could take the group now, before policies and dependencies."""
    return (group.priority(member) is not None and snap.usable(member)
            and snap.report(group.name, member) == OFFLINE
            and group.online_attempts.get(member, 0) <= group.online_retry_limit)


def auto_start_order(group: GroupState) -> tuple[str, ...]:
    """AutoStartList (only its systems, in its order), or every system by priority."""
    listed = tuple(m for m in group.auto_start_list if group.priority(m) is not None)
    return listed or group.members


def order(group: GroupState, members: Iterable[str], tally: Tally) -> list[str]:
    """`members` best first by the group's failover policy (ties: priority, name)."""
    def key(m: str) -> tuple[int, int, str]:
        prio = group.priority(m)
        rank = prio if prio is not None else 1 << 30
        if group.failover_policy == ROUND_ROBIN:
            return (tally.count.get(m, 0), rank, m)
        if group.failover_policy == LOAD:
            return (-tally.free(m), rank, m)
        return (0, rank, m)
    return sorted(members, key=key)
