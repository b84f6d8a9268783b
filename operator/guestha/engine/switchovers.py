"""Switchovers: an orderly move of a Failover group (VCS hagrp -switch).

Phases (the Switchover's status.phase):
- Pending: accepted. It stays Pending while the group settles (Starting, Stopping or
  Unknown somewhere) or while another Switchover of the same group runs (the Running
  one goes first, else the first by name). Then it fails at once when the group does
  not exist (GroupNotFound), is Parallel (NotFailoverGroup), is frozen (GroupFrozen), is
  online nowhere (GroupNotOnline), when `to` is not one of its systems
  (TargetNotInSystems), is Faulted there (TargetFaulted), cannot take it now (its agent
  does not answer, its VMI is not Running on a Ready node, or its agent does not report
  the group Offline: TargetUnavailable), when its dependencies forbid the target
  (DependencyNotMet) or its load does not fit (InsufficientCapacity). `to` left out:
  the best other member by the group's failover policy (NoTarget when there is none).
  `to` naming the member it already runs on: Succeeded (AlreadyOnTarget).
  Otherwise it becomes Running: offline on the member it runs on (`from`).
- Running: offline on `from` until its agent reports Offline (or Faulted); then, once
  rule 1 holds on every member, online on the target; Succeeded (Switched) when the
  target reports Online or Partial. Failed (OnlineFailed) when the online faults
  there, TargetUnavailable when the target is gone by the time the group is down,
  GroupFrozen when the group is frozen meanwhile; after a failure the group is placed by
  its failover policy as after any fault (it is still wanted online).
- Succeeded, Failed: final; plan() leaves them out of Plan.switchovers.
While a Switchover runs, it alone moves its group: the group's own placement steps do
not run, so the two can never online it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from guestha.engine import placement, reasons
from guestha.engine.failover import choose, clear_faults
from guestha.engine.outcome import Context, Outcome
from guestha.engine.plan import SwitchoverDecision
from guestha.engine.state import (
    FAILED,
    GROUP_FAILOVER,
    PENDING,
    RUNNING,
    SUCCEEDED,
    GroupState,
    Switchover,
)
from guestha.protocol.states import FAULTED, ONLINE, PARTIAL, STARTING, STOPPING, UNKNOWN


@dataclass(frozen=True)
class Step:
    """A Switchover's decision, and the group's Outcome when the Switchover drives it
    (None: the group is planned as usual)."""

    decision: SwitchoverDecision
    outcome: Outcome | None


def active(switchovers: tuple[Switchover, ...]) -> dict[str, Switchover]:
    """Per group, the one Switchover that may act: the first Running by name, else the
    first Pending by name."""
    chosen: dict[str, Switchover] = {}
    for phase in (RUNNING, PENDING):
        for sw in sorted(switchovers, key=lambda s: s.name):
            if sw.phase == phase and sw.group not in chosen:
                chosen[sw.group] = sw
    return chosen


def blocked(sw: Switchover, first: Switchover) -> SwitchoverDecision:
    return SwitchoverDecision(PENDING, None, sw.to, reasons.ANOTHER_SWITCHOVER,
                              f"waiting: switchover {first.name} moves {sw.group} first")


def not_found(sw: Switchover) -> SwitchoverDecision:
    return SwitchoverDecision(FAILED, sw.from_member, sw.to, reasons.GROUP_NOT_FOUND,
                              f"there is no service group {sw.group}")


def frozen(sw: Switchover) -> SwitchoverDecision:
    return SwitchoverDecision(FAILED, sw.from_member, sw.target or sw.to, reasons.GROUP_FROZEN,
                              f"{sw.group} is frozen: nothing is moved")


def step(ctx: Context, g: GroupState, sw: Switchover) -> Step:
    if g.type != GROUP_FAILOVER:
        return Step(SwitchoverDecision(FAILED, None, sw.to, reasons.NOT_FAILOVER_GROUP,
                                       f"{g.name} is a {g.type} group: it runs on every "
                                       "member already"), None)
    if sw.phase == RUNNING:
        return _running(ctx, g, sw)
    return _pending(ctx, g, sw)


def _fail(sw: Switchover, frm: str | None, to: str | None, reason: str, message: str) -> Step:
    return Step(SwitchoverDecision(FAILED, frm, to, reason, message), None)


def _target_problem(ctx: Context, g: GroupState, to: str) -> tuple[str, str] | None:
    snap = ctx.snap
    if snap.report(g.name, to) == FAULTED:
        return reasons.TARGET_FAULTED, f"{g.name} is faulted on {to}: clear it first"
    if not placement.candidate(snap, g, to):
        m = snap.members.get(to)
        state = "" if m is None else (
            f"agent {'answers' if m.agent_reachable else 'does not answer'}"
            f"{' but lost quorum' if m.quorum_lost else ''}, VM {m.vm}, "
            f"node {'Ready' if m.node_ready else 'not Ready'}, group "
            f"{snap.report(g.name, to) or 'not reported'}")
        return reasons.TARGET_UNAVAILABLE, f"{to} cannot take {g.name} now ({state})"
    allowed, why = choose(ctx, g, [to])
    if not allowed:
        if why == reasons.INSUFFICIENT_CAPACITY:
            return why, f"{g.name} (load {g.load}) does not fit on {to}"
        return reasons.DEPENDENCY_NOT_MET, f"{g.name}'s dependencies forbid {to}"
    return None


def _pending(ctx: Context, g: GroupState, sw: Switchover) -> Step:
    snap = ctx.snap
    reports = {m: snap.report(g.name, m) for m in snap.members}
    if any(st in (STARTING, STOPPING, UNKNOWN) for st in reports.values()):
        return Step(SwitchoverDecision(PENDING, None, sw.to, reasons.WAITING_FOR_GROUP,
                                       f"waiting for {g.name} to settle"), None)
    current = [m for m, st in reports.items() if st in (ONLINE, PARTIAL)]
    if not current:
        return _fail(sw, None, sw.to, reasons.GROUP_NOT_ONLINE,
                     f"{g.name} is not online anywhere: nothing to switch over")
    if len(current) > 1:
        return Step(SwitchoverDecision(PENDING, None, sw.to, reasons.WAITING_FOR_GROUP,
                                       f"waiting: {g.name} runs on {', '.join(current)}"),
                    None)
    frm = current[0]
    if sw.to is not None:
        if g.priority(sw.to) is None:
            return _fail(sw, frm, sw.to, reasons.TARGET_NOT_IN_SYSTEMS,
                         f"{sw.to} is not one of {g.name}'s systems "
                         f"({', '.join(g.members)})")
        if sw.to == frm:
            return Step(SwitchoverDecision(SUCCEEDED, frm, frm, reasons.ALREADY_ON_TARGET,
                                           f"{g.name} is already online on {frm}"), None)
        problem = _target_problem(ctx, g, sw.to)
        if problem:
            return _fail(sw, frm, sw.to, *problem)
        target = sw.to
    else:
        options = [m for m in g.members if m != frm and placement.candidate(snap, g, m)]
        allowed, _ = choose(ctx, g, options)
        ranked = placement.order(g, allowed, ctx.tally)
        if not ranked:
            return _fail(sw, frm, None, reasons.NO_TARGET,
                         f"no other member can take {g.name} now")
        target = ranked[0]
    out = Outcome(g, ctx, switching=True, target=target)
    clear_faults(out)
    out.offline(frm, reasons.SWITCHOVER, f"switchover {sw.name}: {g.name} offline on {frm}, "
                                         f"then online on {target}")
    out.say(reasons.SWITCHOVER, out.offlines[-1].message)
    return Step(SwitchoverDecision(RUNNING, frm, target, reasons.STOPPING_SOURCE,
                                   f"taking {g.name} offline on {frm}"), out)


def _running(ctx: Context, g: GroupState, sw: Switchover) -> Step:
    snap = ctx.snap
    frm = sw.from_member
    reports = {m: snap.report(g.name, m) for m in snap.members}
    target = sw.target or sw.to
    if target is None:
        options = [m for m in g.members if m != frm and placement.candidate(snap, g, m)]
        ranked = placement.order(g, choose(ctx, g, options)[0], ctx.tally)
        if not ranked:
            return _fail(sw, frm, None, reasons.NO_TARGET,
                         f"no other member can take {g.name} now")
        target = ranked[0]
    if reports.get(target) in (ONLINE, PARTIAL):
        return Step(SwitchoverDecision(SUCCEEDED, frm, target, reasons.SWITCHED,
                                       f"{g.name} is online on {target}"), None)
    if reports.get(target) == FAULTED and frm is not None and reports.get(frm) not in (
            ONLINE, PARTIAL, STARTING, STOPPING):
        return _fail(sw, frm, target, reasons.ONLINE_FAILED,
                     f"{g.name} faulted going online on {target}")
    elsewhere = [m for m, st in reports.items()
                 if m not in (frm, target) and st in (ONLINE, PARTIAL, STARTING)]
    if elsewhere:
        return _fail(sw, frm, target, reasons.ONLINE_FAILED,
                     f"{g.name} came up on {', '.join(elsewhere)} instead of {target}")
    out = Outcome(g, ctx, switching=True, target=target)
    clear_faults(out)
    if reports.get(target) == STARTING:
        out.say(reasons.SWITCHOVER, f"{g.name} is starting on {target}")
        return Step(SwitchoverDecision(RUNNING, frm, target, reasons.STARTING_TARGET,
                                       out.message), out)
    if frm is not None and reports.get(frm) in (ONLINE, PARTIAL, STARTING, STOPPING):
        if reports.get(frm) != STOPPING:
            out.offline(frm, reasons.SWITCHOVER, f"switchover {sw.name}: {g.name} offline "
                                                 f"on {frm}")
        out.say(reasons.SWITCHOVER, f"taking {g.name} offline on {frm}")
        return Step(SwitchoverDecision(RUNNING, frm, target, reasons.STOPPING_SOURCE,
                                       out.message), out)
    unknown = [m for m, st in reports.items() if st == UNKNOWN]
    blockers = unknown + [m for m in snap.could_run(g)
                          if m != target and m not in unknown
                          and not snap.proven_not_running(g.name, m)]
    if blockers:
        for m in blockers:
            out.wait_for_proof(m)
        out.say(reasons.NOT_CONFIRMED_OFFLINE,
                f"{g.name} may still run on {', '.join(blockers)}")
        return Step(SwitchoverDecision(RUNNING, frm, target, reasons.NOT_CONFIRMED_OFFLINE,
                                       out.message), out)
    problem = _target_problem(ctx, g, target)
    if problem:
        return _fail(sw, frm, target, *problem)
    out.online(target, reasons.SWITCHOVER, f"switchover {sw.name}: {g.name} online on "
                                           f"{target}")
    out.say(reasons.SWITCHOVER, out.onlines[-1].message)
    return Step(SwitchoverDecision(RUNNING, frm, target, reasons.STARTING_TARGET,
                                   f"bringing {g.name} online on {target}"), out)
