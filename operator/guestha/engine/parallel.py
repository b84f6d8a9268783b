"""A Parallel group: online on every available member of its systems at once.

Rule 1 does not apply (VCS Parallel=1: the application is made to run on several
members). The target members are the AutoStartList when one is given and autoStart is
on, else every system (VCS starts a parallel group on each system of its AutoStartList,
and on a system that joins later). On each target member, independently:
- Faulted: a clear when requested; an online attempt that faulted is retried in place up
  to onlineRetryLimit (clear, then online); otherwise it stays faulted there.
- Offline on a usable member (agent answers, VMI Running, node Ready), its dependencies
  met there (dependencies.py) and its load fitting (failoverPolicy Load): online
  (AutoStart, or OnlineRequested when autoStart is off but the group is wanted).
- A Firm or Hard dependency broken where it runs: offline there.
Nothing happens while the group is not wanted online. autoFailover has nothing to move:
a Parallel group never moves.
"""

from __future__ import annotations

from guestha.engine import dependencies, reasons
from guestha.engine.failover import choose, clear_faults, hard_followers
from guestha.engine.outcome import Context, Outcome
from guestha.engine.state import GroupState
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, PARTIAL, STARTING


def plan_parallel(ctx: Context, g: GroupState) -> Outcome:
    snap = ctx.snap
    out = Outcome(g, ctx)
    name = g.name
    clear_faults(out)
    for m in snap.members:
        state = snap.report(name, m)
        if state in (ONLINE, PARTIAL) or (state == STARTING and m in g.members):
            if state == STARTING:
                continue
            if g.priority(m) is None:
                out.offline(m, reasons.NOT_IN_SYSTEMS,
                            f"{name} runs on {m}, which is not one of its systems")
                continue
            why = dependencies.broken(snap, ctx.placed, g, m)
            if why:
                out.offline(m, reasons.DEPENDENCY_NOT_MET, why)
            elif state == PARTIAL and name in snap.members[m].incomplete \
                    and g.wanted_online and snap.usable(m):
                out.online(m, reasons.COMPLETE_ONLINE,
                           f"{name} on {m}: starting the resources added while it ran")
    hard_followers(out)
    if not g.wanted_online:
        return out.say(reasons.NOT_WANTED,
                       f"{name} stays offline: autoStart is off and nobody asked for it")
    listed = tuple(m for m in g.auto_start_list if g.priority(m) is not None)
    targets = listed if (g.auto_start and listed) else g.members
    reason = reasons.AUTO_START if g.auto_start else reasons.ONLINE_REQUESTED
    waiting: list[str] = []
    for m in targets:
        state = snap.report(name, m)
        attempts = g.online_attempts.get(m, 0)
        if not snap.usable(m) or state not in (OFFLINE, FAULTED):
            continue
        retry = 0 < attempts <= g.online_retry_limit
        if state == FAULTED:
            if retry:
                out.clear(m, reasons.ONLINE_RETRY,
                          f"online of {name} on {m} faulted (attempt {attempts}); clearing "
                          "to retry")
            continue
        if attempts > g.online_retry_limit:
            continue
        allowed, why = choose(ctx, g, [m])
        if not allowed:
            waiting.append(m)
            out.wait(why or reasons.NO_AVAILABLE_MEMBER,
                     f"{name} cannot start on {m}: " + (
                         dependencies.parent_allows(snap, ctx.placed, g, m)
                         or dependencies.child_allows(snap, g, m)
                         or f"load {g.load} does not fit"), m)
            continue
        out.online(m, reasons.ONLINE_RETRY if retry else reason,
                   (f"retrying {name} on {m}" if retry else f"starting {name} on {m}"))
    out.target = None  # several members: GroupDecision.target names a Failover group's one
    if out.onlines:
        where = ", ".join(a.member for a in out.onlines)
        return out.say(out.onlines[0].reason, f"{name}: online on {where}")
    if out.offlines:
        return out.say(out.offlines[0].reason, out.offlines[0].message)
    if out.clears:
        return out.say(out.clears[0].reason, out.clears[0].message)
    if waiting:
        return out.say(out.waits[0].reason, out.waits[0].message)
    return out.say(reasons.STEADY, f"{name}: nothing to do")
