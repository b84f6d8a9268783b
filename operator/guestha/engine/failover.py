"""A Failover group: online on at most one member, moved when it faults or loses it.

Steps, in order (each may end the step):
1. clear_requested: a clear on every member whose agent reports the group Faulted
   (VCS hagrp -clear). The cleared members are not candidates in this same plan: the
   next plan sees them Offline.
2. Running on several members (a concurrency violation, or a member outside its
   systems): it stays on the best one (a system; Online before Partial before
   Starting; then priority, name) and goes offline on the others (VCS takes a failover
   group offline on the systems it should not be online on).
3. A Firm or Hard dependency broken where it runs: offline there (dependencies.py).
   A Hard parent faulted: its child goes offline there too.
4. Something is under way (Starting, Stopping) or it runs: nothing more. An answering
   agent that says Unknown: wait (it may run there).
5. Not wanted online (autoStart off, nobody asked): it stays offline (NotWanted).
6. Rule 1 (safety.py): every member that could run it must be proven not running it;
   otherwise a wait per such member (NotConfirmedOffline), until its lease bound.
7. An online attempt that faulted, attempts <= onlineRetryLimit: retried in place
   (a clear first when the member reports it Faulted: the agent refuses an online
   where a critical resource is Faulted), reason OnlineRetry.
8. A fault seen (Faulted somewhere, failed attempts, or a member lost while its last
   report had the group running) and autoFailover false: nothing moves
   (AutoFailoverDisabled); the fault is reported.
9. Otherwise one online, on the best candidate (placement.py) that its dependencies
   allow and its load fits: Failover when a fault was seen, else AutoStart (AutoStartList
   order; a member ahead of the best one whose guest is still coming up is waited for,
   AutoStartWait, coming_up) or OnlineRequested (autoStart false, but wanted). No
   candidate: a wait that says why (AllFaulted, InsufficientCapacity, DependencyNotMet,
   NoAvailableMember).
At most one online per plan, and only when nothing of the group runs, starts or stops
on any member that answers and every other member is proven clear: rule 1 by
construction, checked again by the property tests.
"""

from __future__ import annotations

from guestha.engine import dependencies, placement, reasons
from guestha.engine.outcome import Context, Outcome
from guestha.engine.plan import OFFLINE as OFFLINE_ACTION
from guestha.engine.plan import Action
from guestha.engine.state import VM_RUNNING, VM_STARTING, GroupState
from guestha.protocol.states import FAULTED, OFFLINE, ONLINE, PARTIAL, STARTING, STOPPING, UNKNOWN

_BIG = 1 << 30


def clear_faults(out: Outcome) -> None:
    snap, g = out.ctx.snap, out.group
    if g.clear_requested:
        for m in snap.members:
            if snap.report(g.name, m) == FAULTED:
                out.clear(m, reasons.CLEAR_REQUESTED, f"clear of {g.name} on {m} requested")


def complete_in_place(out: Outcome, member: str, busy: list[str]) -> bool:
    """The group runs on `member`, Partial only because resources were added while it ran
    (the agent probed them, none faulted): an online there starts them, nothing moves.
    Only when it runs nowhere else and every other member is proven not to (rule 1)."""
    snap, g = out.ctx.snap, out.group
    m = snap.members.get(member)
    if m is None or g.name not in m.incomplete or snap.report(g.name, member) != PARTIAL \
            or not g.wanted_online or busy != [member] or not snap.usable(member):
        return False
    if any(not snap.proven_not_running(g.name, other)
           for other in snap.could_run(g) if other != member):
        return False
    out.online(member, reasons.COMPLETE_ONLINE,
               f"{g.name} on {member}: starting the resources added while it ran")
    out.say(reasons.COMPLETE_ONLINE, out.onlines[-1].message)
    return True


def hard_followers(out: Outcome) -> None:
    """A Hard parent faulted: its children go offline there (dependencies.py)."""
    ctx = out.ctx
    for child, member in dependencies.hard_children(ctx.snap, ctx.placed, out.group):
        placed = ctx.placed.offlines(child)
        if member not in placed:
            placed.add(member)
            out.others.append(Action(OFFLINE_ACTION, member, child, reasons.PARENT_FAULTED,
                                     f"{out.group.name} faulted on {member} and depends on "
                                     f"{child} Hard: both fail over together"))


def choose(ctx: Context, g: GroupState, members: list[str]) -> tuple[list[str], str | None]:
    """The members of `members` (candidates) that dependencies and load allow, and, when
    none is left, the reason word for the wait."""
    snap = ctx.snap
    allowed = [m for m in members
               if dependencies.parent_allows(snap, ctx.placed, g, m) is None
               and dependencies.child_allows(snap, g, m) is None]
    if members and not allowed:
        return [], reasons.DEPENDENCY_NOT_MET
    fitting = [m for m in allowed if ctx.tally.fits(g, m)]
    if allowed and not fitting:
        return [], reasons.INSUFFICIENT_CAPACITY
    return fitting, None if fitting else reasons.NO_AVAILABLE_MEMBER


def dependency_text(ctx: Context, g: GroupState) -> str:
    """Why dependencies keep g off each of its systems (for a wait's message)."""
    parts = []
    for m in g.members:
        why = (dependencies.parent_allows(ctx.snap, ctx.placed, g, m)
               or dependencies.child_allows(ctx.snap, g, m))
        if why:
            parts.append(why)
    return "; ".join(dict.fromkeys(parts)) or "its dependencies are not met"


def coming_up(out: Outcome, target: str | None) -> bool:
    """AutoStart waits for the members ahead of `target` in the AutoStartList that are
    coming up: KubeVirt created their guest less than Settings.auto_start_wait ago, and
    they cannot take the group yet (agent not answering, VMI or node not seen ready).
    Guests of one cluster boot together but not in step; without the wait the group
    lands on whichever agent answered first (VCS waits for every system to join before
    it autostarts). A member whose agent lost quorum is not coming up but cut off (an
    agent still joining never had quorum: it is usable, and refuses until it has): it is
    not waited for. True when it waits (the waits are in `out`)."""
    snap, g = out.ctx.snap, out.group
    settings = snap.state.settings
    waiting = []
    for name in placement.auto_start_order(g):
        if name == target:
            break
        m = snap.members.get(name)
        if m is None or m.vm_since is None or m.vm not in (VM_RUNNING, VM_STARTING) \
                or snap.usable(name) or m.quorum_lost or m.stop_confirmed \
                or m.fence_requested_at is not None:
            continue
        until = m.vm_since + settings.auto_start_wait
        if snap.now >= until:
            continue
        why = ("its VMI is not running yet" if m.vm != VM_RUNNING
               else "its node is not Ready" if not m.node_ready
               else "its agent does not answer yet")
        out.wait(reasons.AUTO_START_WAIT,
                 f"{g.name} waits for {name}, ahead in its AutoStartList: {why} (at most "
                 f"{until - snap.now:.0f} s more)", name, until)
        waiting.append(name)
    if not waiting:
        return False
    out.say(reasons.AUTO_START_WAIT,
            f"{g.name} waits for {', '.join(waiting)} to come up before it auto-starts")
    return True


def plan_failover(ctx: Context, g: GroupState) -> Outcome:
    snap = ctx.snap
    out = Outcome(g, ctx)
    name = g.name
    reports = {m: snap.report(name, m) for m in snap.members}
    clear_faults(out)

    running = [m for m, st in reports.items() if st in (ONLINE, PARTIAL, STARTING)]
    keep: str | None = None
    if running:
        rank = {ONLINE: 0, PARTIAL: 1, STARTING: 2}
        best = sorted(running, key=lambda m: (g.priority(m) is None, rank[reports[m] or ""],
                                              g.priority(m) if g.priority(m) is not None
                                              else _BIG, m))
        keep = best[0] if g.priority(best[0]) is not None else None
        for m in best:
            if m == keep:
                continue
            if g.priority(m) is None:
                out.offline(m, reasons.NOT_IN_SYSTEMS,
                            f"{name} runs on {m}, which is not one of its systems")
            else:
                out.offline(m, reasons.CONCURRENCY_VIOLATION,
                            f"{name} runs on {keep} and on {m}: offline on {m}")
    if keep is not None and reports[keep] != STARTING:
        why = dependencies.broken(snap, ctx.placed, g, keep)
        if why:
            out.offline(keep, reasons.DEPENDENCY_NOT_MET, why)
    hard_followers(out)

    stopping = [m for m, st in reports.items() if st == STOPPING]
    if running or stopping:
        if out.offlines and keep in ctx.placed.offlines(name):
            return out.say(reasons.DEPENDENCY_NOT_MET, out.offlines[-1].message)
        if out.offlines:
            return out.say(out.offlines[0].reason, out.offlines[0].message)
        if keep is not None and complete_in_place(out, keep, running + stopping):
            return out
        if keep is not None and reports[keep] != STARTING:
            return out.say(reasons.STEADY, f"{name} is {reports[keep]} on {keep}")
        where = ", ".join(f"{m} {reports[m]}" for m in running + stopping)
        return out.say(reasons.IN_PROGRESS, f"{name}: under way ({where})")
    unknown = [m for m, st in reports.items() if st == UNKNOWN]
    if unknown:
        for m in unknown:
            out.wait(reasons.STATE_UNKNOWN, f"{name}'s state on {m} is Unknown", m)
        return out.say(reasons.STATE_UNKNOWN,
                       f"{name} may run on {', '.join(unknown)} (state Unknown)")

    if not g.wanted_online:
        return out.say(reasons.NOT_WANTED,
                       f"{name} stays offline: autoStart is off and nobody asked for it")

    blockers = [m for m in snap.could_run(g) if not snap.proven_not_running(name, m)]
    if blockers:
        for m in blockers:
            out.wait_for_proof(m)
        return out.say(reasons.NOT_CONFIRMED_OFFLINE,
                       f"{name} cannot start anywhere until {', '.join(blockers)} "
                       "is confirmed not running it (safety rule 1)")

    attempts = {m: n for m, n in g.online_attempts.items() if n > 0}
    faulted = [m for m, st in reports.items() if st == FAULTED]
    lost_holders = [m for m in snap.members if snap.history(name, m) in
                    (ONLINE, PARTIAL, STARTING, STOPPING, UNKNOWN)]
    fault_seen = bool(faulted or attempts or lost_holders)

    retry = [m for m in g.members if 0 < attempts.get(m, 0) <= g.online_retry_limit
             and snap.usable(m) and reports[m] in (OFFLINE, FAULTED)]
    if retry:
        m = retry[0]
        left = g.online_retry_limit - attempts[m]
        if reports[m] == FAULTED:
            out.clear(m, reasons.ONLINE_RETRY,
                      f"online of {name} on {m} faulted (attempt {attempts[m]}); clearing "
                      f"to retry ({left} more allowed after this)")
            return out.say(reasons.ONLINE_RETRY, out.clears[-1].message)
        allowed, _ = choose(ctx, g, [m])
        if allowed:
            out.online(m, reasons.ONLINE_RETRY,
                       f"retrying {name} on {m} after {attempts[m]} failed attempt(s)")
            return out.say(reasons.ONLINE_RETRY, out.onlines[-1].message)

    if fault_seen and not g.auto_failover:
        where = ", ".join(faulted or sorted(attempts) or lost_holders)
        return out.say(reasons.AUTO_FAILOVER_DISABLED,
                       f"{name} faulted or lost ({where}); autoFailover is false: it stays "
                       "offline until a Switchover or a clear")

    candidates = [m for m in g.members if placement.candidate(snap, g, m)]
    if fault_seen:
        reason = reasons.FAILOVER
        pool = candidates
    elif g.auto_start:
        reason = reasons.AUTO_START
        pool = [m for m in placement.auto_start_order(g) if m in candidates]
    else:
        reason = reasons.ONLINE_REQUESTED
        pool = candidates
    allowed, why = choose(ctx, g, pool)
    if reason != reasons.AUTO_START:
        allowed = placement.order(g, allowed, ctx.tally)
    elif coming_up(out, allowed[0] if allowed else None):
        return out
    if allowed:
        target = allowed[0]
        where = ", ".join(faulted or sorted(attempts) or lost_holders)
        text = {reasons.FAILOVER: f"{name} faulted or lost ({where}): online on {target} "
                                  f"({g.failover_policy})",
                reasons.AUTO_START: f"auto-starting {name} on {target}",
                reasons.ONLINE_REQUESTED: f"online of {name} on {target} "
                                          f"({g.failover_policy})"}[reason]
        out.online(target, reason, text)
        return out.say(reason, text)
    systems = [m for m in g.members if m in snap.members]
    if systems and all(reports[m] == FAULTED for m in systems):
        why = reasons.ALL_FAULTED
        text = f"{name} is faulted on every system ({', '.join(systems)}): clear it"
    elif why == reasons.DEPENDENCY_NOT_MET:
        text = f"{name} waits for its dependencies: {dependency_text(ctx, g)}"
    elif why == reasons.INSUFFICIENT_CAPACITY:
        text = f"{name} (load {g.load}) fits on no available member"
    else:
        why = reasons.NO_AVAILABLE_MEMBER
        text = f"no member can take {name} now"
    out.wait(why or reasons.NO_AVAILABLE_MEMBER, text)
    return out.say(why or reasons.NO_AVAILABLE_MEMBER, text)
