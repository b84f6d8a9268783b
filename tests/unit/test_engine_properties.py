"""Properties of guestha.engine.plan over random clusters (hypothesis).

The golden scenarios show chosen cases; these search for a state that breaks a safety
rule. P1-P6 look at one plan of a random state (members 1-7 with random VM phases,
reachability, contact times, node readiness, fences, migrations and group reports;
groups of both types with random specs and dependencies; switchovers; settings; time).
P7 runs a model cluster for many rounds: the plan's actions are applied to model agents,
faults, partitions (a member cut off from everyone, or only from the operator), node
failures and time steps come at random, and cut-off members self-fence as the agent
does (docs/agent-api.md, Quorum and self-fencing), as late as they are allowed to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestha.engine import (
    ClusterState,
    Dependency,
    GroupState,
    MemberState,
    Plan,
    Settings,
    Switchover,
    plan,
)
from guestha.engine.state import (
    DEPENDENCY_KINDS,
    FAILOVER_POLICIES,
    FENCING_POLICIES,
    RIGIDITIES,
    SWITCHOVER_PHASES,
    VM_STATES,
)
from guestha.protocol.states import (
    FAULTED,
    GROUP_STATES,
    OFFLINE,
    ONLINE,
    PARTIAL,
    STARTING,
    STOPPING,
)

pytestmark = pytest.mark.unit

NAMES = [f"m{i}" for i in range(7)]
GROUPS = [f"g{i}" for i in range(4)]
times = st.one_of(st.none(), st.floats(0, 300, allow_nan=False).map(lambda t: round(t, 1)))


@st.composite
def settings_(draw: Any) -> Settings:
    return Settings(
        peer_timeout=draw(st.sampled_from([1.0, 3.0, 10.0])),
        self_fence_timeout=draw(st.sampled_from([0.0, 5.0, 10.0])),
        fencing_policy=draw(st.sampled_from(FENCING_POLICIES)),
        watchdog=draw(st.booleans()),
        lease_margin=draw(st.sampled_from([0.0, 2.0])),
        migration_max_pause=draw(st.sampled_from([0.0, 30.0])),
        operator_lease=draw(st.sampled_from([1.0, 15.0])),
        offline_timeout=draw(st.sampled_from([1.0, 60.0])),
    )


def mostly(value: Any, *others: Any) -> Any:
    """A strategy that draws `value` about three times in four (so that random states
    reach the interesting branches: placements, fences, lease bounds)."""
    return st.sampled_from([value, value, value, *others] if others else [value])


@st.composite
def states(draw: Any) -> ClusterState:
    n = draw(st.integers(1, 7))
    names = NAMES[:n]
    groups_n = draw(st.integers(1, 4))
    gnames = GROUPS[:groups_n]
    one = st.sampled_from([OFFLINE] * 12 + [FAULTED] * 2 + [ONLINE] * 2 + [None]
                          + list(GROUP_STATES))
    reports = st.lists(one, min_size=groups_n, max_size=groups_n).map(
        lambda states: {g: s for g, s in zip(gnames, states, strict=True) if s is not None})
    members = []
    for name in names:
        seen = draw(reports)
        members.append(MemberState(
            name, capacity=draw(st.integers(0, 150)),
            vm=draw(mostly("Running", *VM_STATES)),
            agent_reachable=draw(mostly(True, False)), last_contact=draw(times),
            last_heard_by_peers=draw(times), node_ready=draw(mostly(True, False)),
            stop_confirmed=draw(mostly(False, True)),
            fence_requested_at=draw(st.one_of(st.none(), st.none(), times)),
            migrating=draw(mostly(False, True)), groups=seen,
            incomplete=frozenset(g for g, s in seen.items()
                                 if s == PARTIAL and draw(st.booleans()))))
    groups = []
    for gname in gnames:
        systems = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        prios = draw(st.lists(st.integers(0, 3), min_size=len(systems),
                              max_size=len(systems)))
        deps = draw(st.lists(st.builds(Dependency, st.sampled_from([*gnames, "nope"]),
                                       st.sampled_from(DEPENDENCY_KINDS),
                                       st.sampled_from(RIGIDITIES)), max_size=2))
        groups.append(GroupState(
            gname, type=draw(st.sampled_from(["Failover", "Failover", "Parallel"])),
            systems=tuple(zip(systems, prios, strict=True)),
            auto_start=draw(st.booleans()),
            auto_start_list=tuple(draw(st.lists(st.sampled_from(systems), unique=True))),
            failover_policy=draw(st.sampled_from(FAILOVER_POLICIES)),
            auto_failover=draw(mostly(True, False)), frozen=draw(mostly(False, True)),
            online_retry_limit=draw(st.integers(0, 2)), load=draw(st.integers(0, 100)),
            dependencies=tuple(d for d in deps if d.group != gname),
            wanted_online=draw(mostly(True, False)),
            online_attempts=draw(st.dictionaries(st.sampled_from(names), st.integers(0, 3),
                                                 max_size=2)),
            clear_requested=draw(mostly(False, True))))
    switchovers = []
    for i in range(draw(st.integers(0, 2))):
        switchovers.append(Switchover(
            f"s{i}", draw(st.sampled_from([*gnames, "nope"])),
            draw(st.one_of(st.none(), st.sampled_from(names))),
            draw(st.sampled_from(SWITCHOVER_PHASES)),
            draw(st.one_of(st.none(), st.sampled_from(names))),
            draw(st.one_of(st.none(), st.sampled_from(names)))))
    return ClusterState(draw(st.floats(0, 400, allow_nan=False)), draw(settings_()),
                        tuple(members), tuple(groups), tuple(switchovers),
                        draw(mostly(True, False)))


def rule1_clear(state: ClusterState, group: GroupState, member: MemberState) -> bool:
    """Rule 1 for one other member, written from DESIGN.md apart from the engine's code:
    its answering agent says Offline/Faulted, or its stop was confirmed, or its lease
    bound (the brief's formula, which the engine's must not undercut) has passed."""
    report = member.groups.get(group.name)
    in_systems = any(m == member.name for m, _ in group.systems)
    if not in_systems and report in (None, OFFLINE, FAULTED):
        return True  # not a system and nothing of it reported: it is never started there
    if member.agent_reachable:
        return report in (OFFLINE, FAULTED)
    if member.stop_confirmed:
        return True
    s = state.settings
    contacts = [t for t in (member.last_contact, member.last_heard_by_peers) if t is not None]
    if s.fencing_policy == "None" or s.self_fence_timeout <= 0 or not contacts:
        return False
    bound = max(contacts) + s.peer_timeout + s.self_fence_timeout + s.lease_margin
    return state.now >= bound


def failover_groups(state: ClusterState) -> dict[str, GroupState]:
    return {g.name: g for g in state.groups if g.type == "Failover"}


PROPS = settings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_p1_rule1_holds_for_every_online(state: ClusterState) -> None:
    """P1: a Failover group is onlined on B only where B's agent reports it Offline (or
    Partial for resources that never started: completed in place), and every other
    member that could run it is proven clear."""
    result = plan(state)
    groups = failover_groups(state)
    members = {m.name: m for m in state.members}
    for action in result.actions:
        if action.kind != "online" or action.group not in groups:
            continue
        g = groups[action.group]
        target = members[action.member]
        assert target.agent_reachable
        assert target.groups.get(g.name) == OFFLINE or (
            target.groups.get(g.name) == PARTIAL and g.name in target.incomplete)
        for other in state.members:
            if other.name != action.member:
                assert rule1_clear(state, g, other), (action, other)


@PROPS
@given(states())
def test_p2_never_two_onlines_of_one_failover_group(state: ClusterState) -> None:
    """P2: at most one online per Failover group, and none while an answering agent
    reports it running, starting, stopping or unknown anywhere else (where it is Partial
    for resources that never started, the online completes it in place)."""
    result = plan(state)
    groups = failover_groups(state)
    onlines = [(a.group, a.member) for a in result.actions
               if a.kind == "online" and a.group in groups]
    assert len(onlines) == len({g for g, _ in onlines})
    for name, target in onlines:
        busy = [m.name for m in state.members if m.agent_reachable
                and m.groups.get(name) not in (None, OFFLINE, FAULTED)
                and not (m.name == target and name in m.incomplete)]
        assert not busy, (name, busy)


@PROPS
@given(states(), st.randoms(use_true_random=False))
def test_p3_deterministic_and_order_independent(state: ClusterState,
                                                rnd: random.Random) -> None:
    first = plan(state)
    assert plan(state) == first
    members, groups, switchovers = (list(state.members), list(state.groups),
                                    list(state.switchovers))
    rnd.shuffle(members)
    rnd.shuffle(groups)
    rnd.shuffle(switchovers)
    shuffled = replace(state, members=tuple(members), groups=tuple(groups),
                       switchovers=tuple(switchovers))
    assert plan(shuffled) == first


@PROPS
@given(states())
def test_p4_frozen_groups_get_no_actions(state: ClusterState) -> None:
    frozen = {g.name for g in state.groups if g.frozen}
    assert not [a for a in plan(state).actions if a.group in frozen]


@PROPS
@given(states())
def test_p5_no_leader_no_plan(state: ClusterState) -> None:
    assert plan(replace(state, leader=False)) == Plan()


@PROPS
@given(states())
def test_p6_fence_only_lost_members_on_ready_nodes(state: ClusterState) -> None:
    """P6: no fence of a member whose node is not Ready (KubeVirt cannot confirm a stop
    there), nor of one whose agent answers, whose stop is confirmed or already
    requested, and only with fencing policy KubeVirt."""
    members = {m.name: m for m in state.members}
    for a in plan(state).actions:
        if a.kind != "fence":
            continue
        m = members[a.member]
        assert m.node_ready and not m.agent_reachable and not m.stop_confirmed
        assert m.fence_requested_at is None and m.vm == "Running"
        assert state.settings.fencing_policy == "KubeVirt"
        assert any(o.agent_reachable for o in state.members if o.name != m.name)


def test_every_plan_carries_messages_and_a_state_per_group() -> None:
    """Not a property of safety, but of a usable plan: checked on the examples below."""

    @settings(max_examples=50, deadline=None)
    @given(states())
    def check(state: ClusterState) -> None:
        result = plan(state)
        if state.leader:
            assert set(result.groups) == {g.name for g in state.groups}
        for a in result.actions:
            assert a.message and a.reason
        for w in result.waits:
            assert w.message and w.reason
        bounds = [w.until for w in result.waits if w.until is not None and w.until > state.now]
        assert result.next_wakeup == (min(bounds) if bounds else None)

    check()


# ---- P7: a model cluster run for many rounds ---------------------------------------

RUNNING = (STARTING, ONLINE, PARTIAL, STOPPING)


@dataclass
class Model:
    """The truth the engine does not see directly: what runs where."""

    settings: Settings
    names: list[str]
    groups: tuple[GroupState, ...]
    now: float = 0.0
    truth: dict[str, dict[str, str]] = field(default_factory=dict)
    seen: dict[str, dict[str, str]] = field(default_factory=dict)  # last report
    isolated: dict[str, float] = field(default_factory=dict)  # cut off from all, since
    # The latest time a partner in its partition left it (healed or fenced): it may have
    # heard the member until then, and says so when it answers the operator again.
    partner_left: dict[str, float] = field(default_factory=dict)
    operator_cut: set[str] = field(default_factory=set)  # only the operator cannot reach
    node_down: set[str] = field(default_factory=set)
    contact: dict[str, float] = field(default_factory=dict)
    fenced: dict[str, int] = field(default_factory=dict)  # rounds until it boots again
    fence_requested: dict[str, float] = field(default_factory=dict)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)

    def reachable(self, m: str) -> bool:
        return m not in self.isolated and m not in self.operator_cut and m not in self.fenced

    def state(self) -> ClusterState:
        members = []
        for m in self.names:
            if self.reachable(m):
                self.contact[m] = self.now
                self.seen[m] = dict(self.truth[m])
            heard = (max(self.isolated[m], self.partner_left.get(m, 0.0))
                     if m in self.isolated
                     else self.contact.get(m) if m in self.fenced else self.now)
            members.append(MemberState(
                m, vm="Stopped" if m in self.fenced else "Running",
                agent_reachable=self.reachable(m), last_contact=self.contact.get(m),
                last_heard_by_peers=heard, node_ready=m not in self.node_down,
                stop_confirmed=m in self.fenced,
                fence_requested_at=self.fence_requested.get(m),
                groups=dict(self.seen[m])))
        groups = tuple(replace(g, online_attempts={m: n for (gn, m), n in self.attempts.items()
                                                   if gn == g.name})
                       for g in self.groups)
        return ClusterState(self.now, self.settings, tuple(members), groups)

    def apply(self, result: Plan) -> None:
        for a in result.actions:
            if a.kind == "fence":
                self.fence_requested[a.member] = self.now
                if a.member not in self.node_down:  # the node confirms the stop
                    self.fenced[a.member] = 2
                    self.truth[a.member] = {g: OFFLINE for g in self.truth[a.member]}
                    self.leave(a.member)
                    self.operator_cut.discard(a.member)
                continue
            assert a.group is not None
            if not self.reachable(a.member):
                continue
            here = self.truth[a.member]
            if a.kind == "online" and here.get(a.group) == OFFLINE:
                here[a.group] = STARTING
            elif a.kind == "offline" and here.get(a.group) in (ONLINE, PARTIAL, STARTING):
                here[a.group] = STOPPING
            elif a.kind == "clear" and here.get(a.group) == FAULTED:
                here[a.group] = OFFLINE
                self.attempts.pop((a.group, a.member), None)

    def leave(self, m: str) -> None:
        """m leaves its partition: the others there may have been heard by it until now."""
        if self.isolated.pop(m, None) is not None:
            for other in self.isolated:
                self.partner_left[other] = self.now

    def self_fence(self) -> None:
        """Cut-off members lose quorum and take their Failover groups down, at the
        latest moment the agent may (docs/agent-api.md): the partition's votes, plus the
        operator's until its lease lapses, against a strict majority of members + 1."""
        s = self.settings
        if s.self_fence_timeout <= 0:
            return
        votes = len(self.names) + 1
        part = len(self.isolated)
        for m, since in self.isolated.items():
            if 2 * part > votes:
                continue
            lost = max(since, self.partner_left.get(m, 0.0)) + s.peer_timeout
            if 2 * (part + 1) > votes:
                lost = max(lost, self.contact.get(m, 0.0) + s.operator_lease)
            if self.now >= lost + s.self_fence_timeout + s.offline_timeout:
                for g in self.groups:
                    if g.type == "Failover" and self.truth[m].get(g.name) in RUNNING:
                        self.truth[m][g.name] = OFFLINE

    def progress(self, rnd: random.Random) -> None:
        for m in self.names:
            for g, st_ in list(self.truth[m].items()):
                if st_ == STARTING:
                    ok = rnd.random() < 0.8
                    self.truth[m][g] = ONLINE if ok else FAULTED
                    if ok:
                        self.attempts.pop((g, m), None)
                    else:
                        self.attempts[g, m] = self.attempts.get((g, m), 0) + 1
                elif st_ == STOPPING:
                    self.truth[m][g] = OFFLINE
        for m in list(self.fenced):
            self.fenced[m] -= 1
            if self.fenced[m] <= 0:  # the VM came back by its runStrategy
                del self.fenced[m]
                self.fence_requested.pop(m, None)

    def chaos(self, rnd: random.Random) -> None:
        roll = rnd.random()
        m = rnd.choice(self.names)
        if roll < 0.15:
            running = [g for g, s_ in self.truth[m].items() if s_ == ONLINE]
            if running:
                self.truth[m][rnd.choice(running)] = FAULTED
        elif roll < 0.25 and m not in self.fenced and m not in self.isolated:
            self.isolated[m] = self.now
            self.partner_left.pop(m, None)
        elif roll < 0.3 and m not in self.fenced:
            self.operator_cut.add(m)
        elif roll < 0.45:
            self.leave(m)
            self.operator_cut.discard(m)
        elif roll < 0.5:
            self.node_down.add(m)
        elif roll < 0.6:
            self.node_down.discard(m)
        self.now += rnd.choice([0.5, 2.0, 5.0, 20.0, 60.0])

    def check(self) -> None:
        for g in self.groups:
            if g.type != "Failover":
                continue
            holders = [m for m in self.names if self.truth[m].get(g.name) in RUNNING]
            assert len(holders) <= 1, (g.name, holders, self.now)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 7), st.integers(1, 3), settings_(), st.integers(0, 2**32 - 1))
def test_p7_a_run_never_has_two_live_copies(members: int, groups: int, cfg: Settings,
                                            seed: int) -> None:
    rnd = random.Random(seed)
    names = NAMES[:members]
    specs = []
    for i in range(groups):
        systems = rnd.sample(names, rnd.randint(1, members))
        specs.append(GroupState(
            f"g{i}", type=rnd.choice(["Failover", "Failover", "Parallel"]),
            systems=tuple((m, p) for p, m in enumerate(systems)),
            failover_policy=rnd.choice(FAILOVER_POLICIES), load=rnd.randint(0, 60),
            online_retry_limit=rnd.randint(0, 1), auto_failover=rnd.random() < 0.9))
    model = Model(cfg, names, tuple(specs))
    for m in names:
        model.truth[m] = {g.name: OFFLINE for g in specs if g.priority(m) is not None}
        model.seen[m] = dict(model.truth[m])
    for _ in range(40):
        model.apply(plan(model.state()))
        model.check()
        model.progress(rnd)
        model.chaos(rnd)
        model.self_fence()  # what the cut-off agents did by the new now
        model.check()
