"""The pipeline: plan(state) -> Plan, as Pacemaker's scheduler goes from a cluster
state to a transition, in a fixed order of steps:

1. Leadership (safety rule 2): a replica that is not the leader plans nothing.
2. Snapshot: members, groups, switchovers sorted by name; who is confirmed down
   (safety.py, rule 1b/1c).
3. Members: fencing and member waits (fencing.py).
4. Groups in dependency order, children first (dependencies.py): frozen groups only
   report; a Switchover that drives its group plans it (switchovers.py); otherwise a
   Failover group (failover.py) or a Parallel group (parallel.py) is planned. Each
   step sees what earlier steps planned (Placed, Tally): a parent sees its child's
   offline, RoundRobin and Load see the onlines already placed.
5. Decisions: each group's state (decisions.py), each Switchover's phase, and
   next_wakeup, the earliest time a wait's bound passes.
No step reads a clock, a file or the network: the same ClusterState gives the same Plan.
"""

from __future__ import annotations

from guestha.engine import dependencies, fencing, reasons, switchovers
from guestha.engine.decisions import decide
from guestha.engine.failover import plan_failover
from guestha.engine.outcome import Context, Outcome
from guestha.engine.parallel import plan_parallel
from guestha.engine.placement import Tally
from guestha.engine.plan import Action, GroupDecision, Plan, SwitchoverDecision, Wait
from guestha.engine.snapshot import Snapshot
from guestha.engine.state import GROUP_FAILOVER, PENDING, RUNNING, ClusterState


def plan(state: ClusterState) -> Plan:
    """The plan for this snapshot (see the module docstring and docs/engine.md)."""
    if not state.leader:
        return Plan()
    snap = Snapshot.of(state)
    ctx = Context(snap, Tally.of(snap))
    frozen = [n for n, g in snap.groups.items() if g.frozen]
    fence_actions, member_waits = fencing.plan_members(snap, frozen)

    sw_decisions: dict[str, SwitchoverDecision] = {}
    chosen = switchovers.active(state.switchovers)
    for sw in sorted(state.switchovers, key=lambda s: s.name):
        if sw.phase not in (PENDING, RUNNING):
            continue
        first = chosen[sw.group]
        if first is not sw:
            sw_decisions[sw.name] = switchovers.blocked(sw, first)
        elif sw.group not in snap.groups:
            sw_decisions[sw.name] = switchovers.not_found(sw)
        elif snap.groups[sw.group].frozen:
            sw_decisions[sw.name] = switchovers.frozen(sw)

    ordered, cyclic = dependencies.order(snap.groups)
    outcomes: list[Outcome] = []
    for name in ordered:
        g = snap.groups[name]
        if g.frozen:
            outcomes.append(Outcome(g, ctx).say(
                reasons.FROZEN, f"{name} is frozen: its states are reported, nothing is "
                "started, stopped, cleared or failed over"))
            continue
        driver = chosen.get(name)
        if driver is not None:
            step = switchovers.step(ctx, g, driver)
            sw_decisions[driver.name] = step.decision
            if step.outcome is not None:
                outcomes.append(step.outcome)
                continue
        outcomes.append(plan_failover(ctx, g) if g.type == GROUP_FAILOVER
                        else plan_parallel(ctx, g))
    for name in cyclic:
        outcomes.append(Outcome(snap.groups[name], ctx).say(
            reasons.DEPENDENCY_CYCLE, f"{name} is in, or depends on, a cycle of group "
            "dependencies: it is not planned"))

    by_name = {out.group.name: out for out in outcomes}
    for out in outcomes:
        for action in out.others:  # a Hard parent took its child offline
            child = by_name.get(action.group or "")
            if child is not None and child.reason == reasons.STEADY:
                child.say(action.reason, action.message)

    actions: list[Action] = list(fence_actions)
    waits: list[Wait] = list(member_waits)
    for out in outcomes:
        actions += out.clears + out.offlines + out.onlines + out.others
        waits += out.waits
    groups: dict[str, GroupDecision] = {}
    for out in sorted(outcomes, key=lambda o: o.group.name):
        groups[out.group.name] = decide(snap, ctx.placed, out.group, out.switching,
                                        out.target, out.reason, out.message)
    bounds = [w.until for w in waits if w.until is not None and w.until > state.now]
    return Plan(tuple(actions), tuple(waits), groups,
                {k: sw_decisions[k] for k in sorted(sw_decisions)},
                min(bounds) if bounds else None)

