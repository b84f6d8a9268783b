"""The ClusterState indexed once per plan, in a fixed order, with rule 1's facts.

plan() must not depend on the order members, groups or switchovers arrive in (property
P3): everything here is sorted by name, and every later step walks these sorted views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from guestha.engine import safety
from guestha.engine.state import VM_RUNNING, ClusterState, GroupState, MemberState
from guestha.protocol.states import ONLINE, PARTIAL, STARTING


@dataclass(frozen=True)
class Snapshot:
    state: ClusterState
    members: Mapping[str, MemberState]  # by name, in name order
    groups: Mapping[str, GroupState]  # by name, in name order
    down: frozenset[str]  # members confirmed down (rule 1b or 1c)

    @classmethod
    def of(cls, state: ClusterState) -> Snapshot:
        members = {m.name: m for m in sorted(state.members, key=lambda m: m.name)}
        groups = {g.name: g for g in sorted(state.groups, key=lambda g: g.name)}
        down = frozenset(n for n, m in members.items() if safety.confirmed_down(m, state))
        return cls(state, members, groups, down)

    @property
    def now(self) -> float:
        return self.state.now

    def report(self, group: str, member: str) -> str | None:
        """The group's state on member as its answering agent reports it; None when the
        agent does not answer, does not know the group, or the member does not exist."""
        m = self.members.get(member)
        if m is None or not m.agent_reachable:
            return None
        return m.groups.get(group)

    def history(self, group: str, member: str) -> str | None:
        """What an unreachable member's agent said last of the group (None otherwise):
        a hint of what may run there, never proof of anything."""
        m = self.members.get(member)
        if m is None or m.agent_reachable:
            return None
        return m.groups.get(group)

    def proven_not_running(self, group: str, member: str) -> bool:
        m = self.members.get(member)
        if m is None:
            return True  # not a member of the cluster: no agent of ours runs there
        if m.agent_reachable:
            return m.groups.get(group) in safety.PROOF_STATES
        return member in self.down

    def could_run(self, group: GroupState) -> tuple[str, ...]:
        """Members rule 1 must hear from before the group goes online elsewhere: its
        systems, and every member whose current or last report shows it in a state other
        than Offline or Faulted (safety.py)."""
        names = {n for n, _ in group.systems if n in self.members}
        for name, m in self.members.items():
            if m.groups.get(group.name, None) not in (None, *safety.PROOF_STATES):
                names.add(name)
        return tuple(sorted(names))

    def usable(self, member: str) -> bool:
        """The member can take a group now: its agent answers and has not lost quorum,
        its VMI runs on a Ready node."""
        m = self.members.get(member)
        return (m is not None and m.agent_reachable and not m.quorum_lost
                and m.vm == VM_RUNNING and m.node_ready)

    def silence_deadline(self, member: MemberState) -> float | None:
        """When the member's silence makes it lost (None: never heard): the peer timeout
        after anyone last heard it, plus the migration allowance while it is `migrating`
        (live-migrating, or restarting its agent for an upgrade). The time the operator's
        own loop ran late within the silence (`operator_late`) does not count: the member
        had the whole peer timeout of an operator that was listening."""
        since = safety.silent_since(member)
        if since is None:
            return None
        s = self.state.settings
        return since + s.peer_timeout + (s.migration_max_pause if member.migrating else 0.0) \
            + max(0.0, member.operator_late)

    def vouched(self, member: str) -> bool:
        """The member's agent does not answer the operator, yet what it said last still
        stands - for status and the Service only, never as rule 1's proof - because its
        silence is explained: a reachable peer heard its heartbeats within the peer
        timeout (it runs; the operator's own link to it is in trouble), or it is
        `migrating` and not yet lost (`silence_deadline`): a guest paused by a live
        migration, or an agent restarting into a new bundle while its resources run on
        (KillMode=process), has not moved anything anywhere."""
        m = self.members.get(member)
        if m is None or m.agent_reachable or member in self.down:
            return False
        heard = m.last_heard_by_peers
        if heard is not None and self.now - heard < self.state.settings.peer_timeout:
            return True
        deadline = self.silence_deadline(m)
        return m.migrating and deadline is not None and self.now < deadline

    def seen(self, group: str, member: str) -> str | None:
        """The group's state on member for its status: the answering agent's report, or
        the last report of a member its peers vouch for (`vouched`)."""
        if self.vouched(member):
            return self.members[member].groups.get(group)
        return self.report(group, member)

    def online_on(self, group: str) -> tuple[str, ...]:
        """Members where the group is seen (`seen`) Online or Partial."""
        return tuple(n for n in self.members if self.seen(group, n) in (ONLINE, PARTIAL))

    def runs(self, group: str, member: str) -> bool:
        """The group is online, partly online or coming online on member (reported)."""
        return self.report(group, member) in (ONLINE, PARTIAL, STARTING)
